"""The exact PF where complex eigenvalues cross the logarithm's branch cut (Re hλ = 1, Im hλ > 0)."""
import warnings

import numpy as np
import pytest
import torch

from flows import gradient_descent, integrate, pf_coefficient
from flows.dynamics.fields import LogBranch, pf
from flows.objective import toys

# the cubic toy from (0.6, 0.5) at h = 0.5: hλ starts at 1.20 > 1, the complex PF state's eigenvalues
# cross the cut on their way back below 1, while GD converges
START, H, STEPS = (0.6, 0.5), 0.5, 20


def test_the_principal_branch_jumps_at_the_cut_and_the_continued_one_does_not():
    below, above = torch.tensor([0.999999 + 0.66j]), torch.tensor([1.000001 + 0.66j])
    jump = abs(complex(pf_coefficient(below)[0]) - complex(pf_coefficient(above)[0]))
    assert jump > 4  # 2πi/x: the principal value is discontinuous there
    branch = LogBranch("continued")
    before = pf_coefficient(below, branch(below))
    after = pf_coefficient(above, branch(above))
    assert abs(complex(after[0]) - complex(before[0])) < 1e-5
    assert branch.crossings == 1
    watcher = LogBranch("principal")
    watcher(below)
    watcher(above, t=3.0)
    assert watcher.crossings == 1 and watcher.first_crossing[0] == 3.0


def test_continuation_around_the_branch_point_adds_one_turn_per_loop():
    branch = LogBranch("continued")
    phis = np.linspace(0.1, 0.1 + 4 * np.pi, 200)  # twice around x = 1
    logs = [complex(branch(torch.tensor([1 + 0.3 * np.exp(1j * p)]))[0]) for p in phis]
    assert np.max(np.abs(np.diff(logs))) < 0.1  # continuous along the path
    assert logs[-1].imag - logs[0].imag == pytest.approx(4 * np.pi, abs=1e-6)


def test_branch_mode_is_validated():
    with pytest.raises(ValueError, match="branch mode must be one of"):
        LogBranch("nearest")
    with pytest.raises(ValueError, match="unknown flow_options \\['kk'\\] for flow 'pf'"):
        integrate(toys.get("cubic"), flow="pf", steps=1, flow_options={"kk": 3})


def test_pf_crossing_the_cut_is_reported_converges_and_tracks_gd():
    obj = toys.get("cubic")
    theta0 = torch.tensor(START, dtype=torch.float64)
    gd = gradient_descent(obj, theta0, H, STEPS)
    assert gd.status == "complete" and gd.losses[-1] < 1e-5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adaptive = integrate(obj, theta0, H, flow="pf", steps=STEPS, time_budget=120)
    assert adaptive.status == "complete"
    assert adaptive.config["pf_branch"] == "principal" and adaptive.config["pf_branch_crossings"] >= 1
    cut = [e for e in adaptive.events if e["kind"] == "pf_branch_cut"]
    assert len(cut) == 1 and 0 < cut[0]["time"] < STEPS * H
    assert any("branch cut" in str(w.message) for w in caught)
    assert all(w.filename == __file__ for w in caught if "branch cut" in str(w.message))  # points at the caller
    fixed = integrate(obj, theta0, H, flow="pf", steps=STEPS, method="rk4", step_size=H / 20)
    # the same solution from two solvers: the field's jump at the cut leaves a well-posed ODE
    assert np.abs(np.real(fixed.states) - np.real(adaptive.states)).max() < 0.01

    def drift(traj):
        return np.linalg.norm(np.real(traj.states) - gd.states, axis=1).max()

    # measured: PF 0.103, third order 0.106, IGR 0.144, GF 0.231 (the PF is the closest model of GD here)
    d_pf = drift(adaptive)
    assert d_pf < 0.12
    assert d_pf < drift(integrate(obj, theta0, H, flow="igr", steps=STEPS))
    assert d_pf < drift(integrate(obj, theta0, H, flow="gf", steps=STEPS))


def test_continued_branch_keeps_the_field_continuous_along_a_path():
    """Evaluating the field with one LogBranch along a fine path: no jumps, and crossings are counted."""
    obj = toys.get("cubic")
    z = torch.tensor(START, dtype=torch.complex128)
    principal, continued = LogBranch("principal"), LogBranch("continued")
    steps_p, steps_c = [], []
    zp, zc = z.clone(), z.clone()
    dt = H / 200
    for _ in range(120):  # explicit Euler, fine enough to resolve the crossing
        fp, fc = pf(obj, zp, H, branch=principal), pf(obj, zc, H, branch=continued)
        steps_p.append(fp)
        steps_c.append(fc)
        zp, zc = zp + dt * fp, zc + dt * fc
    jumps_c = max(float((a - b).abs().max()) for a, b in zip(steps_c[1:], steps_c[:-1]))
    jumps_p = max(float((a - b).abs().max()) for a, b in zip(steps_p[1:], steps_p[:-1]))
    assert principal.crossings >= 1
    assert jumps_c < 0.1 < jumps_p
