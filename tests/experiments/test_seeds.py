"""Seeds as an axis: the plan, the per-seed runs with resume, and the tables summarised over seeds."""
import json
import signal

import pytest
from test_cli import TINY  # the tiny config of every experiment (test basenames are unique, so this resolves)

from experiments.cli import registry
from experiments.cli.common import ConfigError, read_table
from experiments.cli.main import main
from experiments.cli.seeds import parse_seeds, summarise_column, summarise_tables

EOS = ["--set", "lrs=0.2,0.5", "--set", "steps=6", "--set", "sharpness_every=3", "--set", "k=2", "--set",
       "gf_every=3", "--set", "n_train=60", "--set", "widths=64,8,10"]


def test_seed_lists_and_ranges():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    for bad in ("0", "a,b", "3-1", "0,,1", "-1,2"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_columns_are_summarised_as_mean_and_sample_sd_or_labels():
    assert summarise_column(["1", "2", "3"]) == "2 ± 1"  # sample sd (ddof = 1)
    assert summarise_column(["0.5", "0.5", "0.5"]) == "0.5"
    assert summarise_column(["1", "inf", "3"]) == "2 ± 1.414 [2 of 3 finite]"
    assert summarise_column(["none", "100", "200"]) == "150 ± 70.71 [2 of 3 finite]"
    assert summarise_column(["complete", "diverged", "complete"]) == "complete / diverged"
    assert summarise_column(["none", "none"]) == "none"
    rows = summarise_tables([[{"h": "0.1", "loss": "1.0"}], [{"h": "0.1", "loss": "3.0"}]], "t.csv")
    assert rows == [{"h": "0.1", "loss": "2 ± 1.414", "seeds": "2"}]
    with pytest.raises(ValueError, match="t.csv"):
        summarise_tables([[{"h": "1"}], [{"h": "1"}, {"h": "2"}]], "t.csv")


def test_a_run_over_seeds_summarises_every_table_and_each_seed_equals_its_single_run(tmp_path):
    out, figs = tmp_path / "out", tmp_path / "figs"
    assert main(["run", "eos-digits", "--seeds", "0,3", "--out", str(out), "--figures", str(figs), "--quiet",
                 *EOS]) == 0
    plan = json.loads((out / "seeds.json").read_text())
    assert plan["seeds"] == [0, 3] and plan["experiment"] == "eos-digits"
    summary = read_table(out / "eos_summary.seeds.csv")
    per_seed = [read_table(out / f"seed-{s}" / "eos_summary.csv") for s in (0, 3)]
    for row, a, b in zip(summary, *per_seed):
        assert row["seeds"] == "2"
        mean = (float(a["final loss"]) + float(b["final loss"])) / 2
        assert float(row["final loss"].split(" ± ")[0]) == pytest.approx(mean, rel=1e-3)
    assert (figs / "eos_digits_seeds.png").exists()  # the mean-with-band figure (plot_seeds)
    assert (out / "figures" / "seed-3" / "eos_digits.png").exists()  # and each seed's own
    single = tmp_path / "single"
    assert main(["run", "eos-digits", "--seed", "3", "--out", str(single), "--figures", str(tmp_path / "f1"),
                 "--quiet", *EOS]) == 0
    assert read_table(single / "eos_summary.csv") == per_seed[1]  # a seed's unit is the single run with that seed
    assert main(["plot", str(out), "--figures", str(tmp_path / "again")]) == 0


def test_an_interrupted_run_over_seeds_resumes_to_the_same_tables(tmp_path, monkeypatch):
    from experiments.edge_of_stability import eos_digits

    out = tmp_path / "out"
    original, calls = eos_digits.run, [0]
    handler_before = signal.getsignal(signal.SIGINT)

    def interrupted_in_the_second_seed(config, folder, ctx):
        calls[0] += 1
        if calls[0] == 2:
            ctx.stop_requested = True  # as the signal handler does
        return original(config, folder, ctx)

    monkeypatch.setattr(eos_digits, "run", interrupted_in_the_second_seed)
    args = ["run", "eos-digits", "--seeds", "0-2", "--out", str(out), "--figures", str(tmp_path / "f"), "--quiet"]
    assert main(args + EOS) == 130
    assert json.loads((out / "seed-0" / "manifest.json").read_text())["status"] == "complete"
    assert json.loads((out / "seed-1" / "manifest.json").read_text())["status"] == "interrupted"
    assert not (out / "seed-2").exists() and not (out / "eos_summary.seeds.csv").exists()
    monkeypatch.setattr(eos_digits, "run", original)
    assert main(["run", "eos-digits", "--resume", str(out), "--figures", str(tmp_path / "f"), "--quiet"]) == 0
    straight = tmp_path / "straight"
    assert main(["run", "eos-digits", "--seeds", "0-2", "--out", str(straight), "--figures", str(tmp_path / "g"),
                 "--quiet", *EOS]) == 0
    resumed, fresh = (read_table(p / "eos_summary.seeds.csv") for p in (out, straight))
    assert resumed == fresh
    assert signal.getsignal(signal.SIGINT) == handler_before  # a call from Python gets its handlers back


def test_bad_seed_requests_are_refused_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "eos-digits", "--seeds", "0", "--out", str(out)]) == 2
    assert "at least two seeds" in capsys.readouterr().err
    assert main(["run", "eos-digits", "--seeds", "0,1", "--seed", "2", "--out", str(out)]) == 2
    assert "exclude" in capsys.readouterr().err
    assert main(["run", "eos-digits", "--seeds", "0,1", "--out", str(out), "--set", "steps=0"]) == 2
    assert "steps" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    (out / "mine.txt").parent.mkdir(parents=True, exist_ok=True)
    (out / "mine.txt").write_text("not driftlab's")
    assert main(["run", "eos-digits", "--seeds", "0,1", "--out", str(out), "--overwrite", *EOS]) == 2
    assert "refusing to delete" in capsys.readouterr().err and (out / "mine.txt").exists()


def test_a_folder_another_run_over_seeds_holds_is_refused(tmp_path, capsys):
    from experiments.cli import folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "seeds.json").write_text(json.dumps({"format": 1, "experiment": "eos-digits", "seeds": [0, 1],
                                                "overrides": [], "outputs": []}))
    other = folder.FolderLock(out)
    other.acquire()
    try:
        assert main(["run", "eos-digits", "--seeds", "0,1", "--out", str(out), "--overwrite", *EOS]) == 2
        assert "in use" in capsys.readouterr().err
        assert (out / "seeds.json").exists()  # nothing deleted under the other run
    finally:
        other.release()


WITH_BANDS = sorted(name for name in registry.names() if hasattr(registry.get(name), "plot_seeds"))


@pytest.mark.parametrize("name", WITH_BANDS)
def test_every_plot_seeds_draws_its_band_figure_from_two_seeds(name, tmp_path):
    figs = tmp_path / "figs"
    sets = [a for pair in TINY[name] for a in ("--set", pair)]
    assert main(["run", name, "--seeds", "0,1", "--out", str(tmp_path / "out"), "--figures", str(figs), "--quiet",
                 *sets]) == 0
    again = tmp_path / "again"  # the module's own plot_seeds, called on the two seed folders
    drawn = registry.get(name).plot_seeds([tmp_path / "out" / "seed-0", tmp_path / "out" / "seed-1"], again)
    assert {p.suffix for p in drawn} == {".png", ".pdf"}
    assert all(p.parent == again and p.stat().st_size > 1000 for p in drawn)
