"""Every experiment end to end with a tiny config, and the CLI's handling of bad input."""
import json

import numpy as np
import pytest

from experiments.cli import registry
from experiments.cli.main import main
from flows import Trajectory

TINY = {
    "pf-quadratic": ["steps=2", "samples_per_step=2", "lrs=0.9,1.05"],
    "pf-toys": ["cases=saddle-escape", "step_scale=0.1", "substeps=2", "flows=gf,pf"],
    "drift-digits": ["n_train=60", "widths=64,16,10", "steps=2", "targets=0.8", "k=2", "substeps=1",
                     "flows=gf,pf_topk"],
    "controllers-digits": ["steps=3", "epochs=1", "batch_size=400", "toy_steps=2", "n_train=100", "widths=64,16,10",
                           "sharpness_every=2", "eval_every=2", "methods=constant:0.1,dal:1,alice:0.01",
                           "minibatch_methods=pal,wngrad:1"],
    "eos-digits": ["lrs=0.2", "steps=4", "sharpness_every=2", "k=2", "gf_every=2", "n_train=100",
                   "widths=64,16,10"],
    "eos-adam": ["lrs=0.01", "steps=6", "every=2", "sharpness_every=3", "n_train=100", "widths=64,12,10"],
    "eos-sgd": ["batch_sizes=8,32", "steps=6", "every=3", "n_train=64", "widths=64,12,10", "rel_error=0.5"],
    "eos-momentum": ["betas=0,0.9", "steps=6", "sharpness_every=3", "n_train=64", "widths=64,12,10"],
    "eos-sgd-gap": ["batch_sizes=4,8,16", "steps=6", "every=2", "n_train=40", "widths=64,8,10", "rel_error=0.5"],
    "eos-sgd-momentum": ["betas=0,0.5", "batch_sizes=8", "steps=6", "every=3", "n_train=40", "widths=64,8,10",
                         "rel_error=0.5"],
    "sgd-modified-flow": ["batch_size=20", "epochs=2", "runs=2", "n_train=60", "widths=64,8,10"],
    "corridors": ["toy_steps=5", "steps=4", "n_train=100", "widths=64,16,10"],
    "bea-order": ["toys=cubic", "points=2", "flows=gf,igr"],
    "flow-arena": ["toy_steps=6", "toy_sigma=1", "digits_steps=4", "digits_sigma=1", "digits_targets=1.6",
                   "n_train=60", "widths=64,12,10", "k=2", "substeps=1", "sharpness_every=2", "circles_steps=6",
                   "circles_sigma=1", "symmetrized_k=2", "onset_window=4"],
    "landscape-digits": ["steps=40", "sharpness_every=10", "ggn_every=20", "window=2", "grid=5", "k=2",
                         "density_starts=2", "density_steps=8", "trace_matvecs=6", "n_train=100", "widths=64,8,10",
                         "lr=0.5"],
    "igr-flat-minima": ["lrs=0.004,0.016", "time=0.2", "path_points=5", "flow_step=0.002"],
    "pf-spikes": ["steps=12", "k=2", "every=2", "before=3", "n_train=80", "widths=64,8,10", "lr=2.0"],
    "polyak-family": ["methods=clr,sps:5,alig:5", "digits_rates=0.1", "cancer_rates=1", "steps=4", "epochs=1",
                      "batch_size=200", "sharpness_every=2", "n_train=100", "widths=64,8,10"],
    "dal-tradeoff": ["ps=0.5,1", "rates=0.1", "steps=4", "epochs=1", "batch_size=200", "sharpness_every=2",
                     "n_train=100", "widths=64,8,10"],
    "central-flow-toy": ["steps=30", "lr=0.3", "sigma=3", "k=2", "n=32", "width=6"],
    "central-rmsprop": ["steps=24", "sigma=1", "every=4", "n_train=64", "width=6", "rules=scalar_rmsprop,adam",
                        "models=digits", "lrs=0.3,0.02", "schedules=warmup-cosine", "beta2s=0.9"],
    "pf-branch": ["steps=2", "solvers=rk4/20", "budget=5"],
    "bench-scaling": ["n_train=100", "widths=64,8,10", "rounds=1", "gd_steps=2", "k=2"],
    "bench-hvp": ["rounds=3", "widths=64,16,10", "n_train=100"],
    "bench-spectrum": ["widths=64,16,10", "n_train=100", "k=2", "warmup_steps=3", "track_steps=2",
                       "power_max_iter=10"],
    "bench-anchors": ["anchors=transformer", "eig_anchors=transformer", "track_anchors=digits-eos",
                      "track_steps=2", "rounds=3", "min_seconds=0", "eig_rounds=1", "k=2"],
    "bench-adaptive": ["adam_steps=6", "every=2", "batch_size=16", "rel_error=0.5", "gd_points=0,2", "n_train=80",
                       "widths=64,8,10"],
    "bench-hessian-kit": ["starts=2", "steps=6", "plane=3", "matvecs=6", "reference_matvecs=12", "repeats=2",
                          "rounds=1", "small_widths=64,4,10", "model=digits-small", "peers=false"],
    "bench-central": ["model=mnist1d", "steps=1", "variants=now", "rate=1.2"],
    "bench-compiled": ["anchors=transformer", "k=2", "rounds=1", "backend=eager"],
    "bench-batching": ["models=transformer,mnist1d", "m=2", "k=2", "rounds=1"],
    "bench-flows": ["widths=64,16,10", "n_train=100", "warmup_steps=2", "span_steps=2", "substeps=1", "ks=2",
                    "lr=0.9", "central_warmup_steps=2", "central_steps=1"],
}


def test_every_registered_experiment_has_a_tiny_config():
    assert set(TINY) == set(registry.names())


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_runs_saves_and_replots(name, tmp_path, capsys):
    out, figs = tmp_path / "out", tmp_path / "figs"
    args = ["run", name, "--out", str(out), "--figures", str(figs), "--quiet"]
    for pair in TINY[name]:
        args += ["--set", pair]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 0 and manifest["experiment"] == name
    assert "torch" in manifest["versions"]
    for path in out.rglob("*.npz"):
        assert len(Trajectory.load(path)) >= 2
    made = sorted(figs.glob("*")) if figs.exists() else []
    assert main(["plot", str(out), "--figures", str(figs)]) == 0
    if name.startswith("bench"):
        assert list(out.glob("*.csv")) and "|" in capsys.readouterr().out
    else:
        assert {p.suffix for p in made} == {".png", ".pdf"}
        for p in made:
            assert p.stat().st_size > 1000


def _one_line_error(capsys, args, *needles):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_exits_2_with_one_line(capsys, tmp_path):
    out = ["--out", str(tmp_path / "o"), "--figures", str(tmp_path / "f")]
    _one_line_error(capsys, ["run", "nope"] + out, "unknown experiment 'nope'", "pf-quadratic")
    _one_line_error(capsys, ["run", "pf-quadratic", "--set", "colour=red"] + out, "unknown key 'colour'", "steps")
    _one_line_error(capsys, ["run", "pf-quadratic", "--set", "steps=many"] + out, "steps=many", "int")
    _one_line_error(capsys, ["run", "pf-quadratic", "--set", "steps"] + out, "key=value")
    _one_line_error(capsys, ["run", "pf-quadratic", "--set", "lrs=-1"] + out, "lrs must be positive")
    _one_line_error(capsys, ["run", "pf-quadratic", "--device", "tpu"] + out, "--device must be one of cpu, cuda")
    _one_line_error(capsys, ["frobnicate"], "invalid choice")
    _one_line_error(capsys, ["plot", str(tmp_path / "missing")], "does not exist")


def test_list_names_every_experiment(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in registry.names():
        assert name in text


def test_close_rates_get_their_own_units(tmp_path):
    from experiments.cli.common import number_key

    assert number_key(0.1) == "0.1" and number_key(0.1000001) == "0.1000001" and number_key(2.0) == "2"
    assert number_key(1 / 3) == repr(1 / 3)
    out = tmp_path / "out"
    args = ["run", "pf-quadratic", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet",
            "--set", "steps=2", "--set", "samples_per_step=2", "--set", "lrs=0.9,0.9000001"]
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("h*")) == ["h0.9", "h0.9000001"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["seeds"]) == {"h0.9", "h0.9000001"}


def _tiny_cifar(folder, per_batch=8):
    from models import write_cifar_batches

    return write_cifar_batches(folder, per_batch)


@pytest.mark.parametrize("data", ["digits", "cifar10"])
def test_eos_runs_on_a_cnn_with_cross_entropy(data, tmp_path):
    out, figs = tmp_path / "out", tmp_path / "figs"
    source = "digits" if data == "digits" else f"cifar10:{_tiny_cifar(tmp_path / 'cifar')}"
    args = ["run", "eos-digits", "--out", str(out), "--figures", str(figs), "--quiet",
            "--set", "arch=cnn", "--set", f"data={source}", "--set", "channels=4", "--set", "n_train=32"]
    for pair in ["lrs=0.5", "steps=4", "sharpness_every=2", "k=2", "gf_every=2"]:
        args += ["--set", pair]
    assert main(args) == 0
    gd = Trajectory.load(next(out.glob("h*")) / "gd")
    assert len(gd) == 5 and np.isfinite(gd.losses).all()
    assert (figs / f"eos_{data}_cnn.png").exists()


@pytest.mark.parametrize("pairs, needle", [
    (["arch=resnet"], "arch must be one of"),
    (["arch=cnn", "data=cifar10:/nonexistent/folder"], "no CIFAR-10 python batches"),
    (["data=cifar10:/tmp"], "needs arch=cnn"),
    (["arch=cnn", "data=imagenet"], "data must be"),
    (["loss=hinge"], "loss must be one of"),
])
def test_eos_architecture_and_data_errors(pairs, needle, tmp_path, capsys):
    args = ["run", "eos-digits", "--out", str(tmp_path / "o")]
    for pair in pairs:
        args += ["--set", pair]
    _one_line_error(capsys, args, needle)


def test_a_run_into_a_log_prints_a_line_per_unit_and_quiet_prints_none(tmp_path, capsys):
    """No terminal, no bars: each unit's start and finish is a timestamped stdout line (stderr stays for errors)."""
    sets = [a for pair in TINY["eos-digits"] for a in ("--set", pair)]
    args = ["run", "eos-digits", "--figures", str(tmp_path / "f")] + sets
    assert main(args + ["--out", str(tmp_path / "loud")]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("driftlab [")]
    assert any(line.endswith("unit h0.2 started") for line in lines), captured.out
    assert any("unit h0.2 finished in" in line and str(tmp_path / "loud") in line for line in lines), captured.out
    assert "unit" not in captured.err
    assert main(args + ["--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "driftlab [" not in capsys.readouterr().out


def test_central_flow_toy_compares_smoothed_losses_only_where_the_window_is_two_sided():
    from experiments.edge_of_stability.central_flow_toy import interior_steps

    assert interior_steps(1000, 50.0) == range(200, 801)
    assert len(interior_steps(30, 10.0)) == 0  # too short a run: no row is compared


def test_the_gap_fit_recovers_a_known_power_law_and_refuses_too_few_points():
    from experiments.edge_of_stability.sgd_gap import power_law_fit

    sizes = np.array([16, 32, 64, 128, 256])
    noise = np.exp(np.array([0.03, -0.02, 0.01, -0.03, 0.02]))
    fit = power_law_fit(sizes, 3.0 * sizes ** -1.27 * noise)
    assert fit.low < -1.27 < fit.high and abs(fit.slope + 1.27) < 0.05 and fit.r_squared > 0.99 and fit.points == 5
    exact = power_law_fit(sizes, 2.0 * sizes ** -1.0)
    assert exact.slope == pytest.approx(-1.0, abs=1e-12) and exact.slope_se == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(power_law_fit(sizes, [0.1, -0.2, 0.05, -0.1, np.nan]).slope)  # 2 positive points
