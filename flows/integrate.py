"""Integrate a flow with torchdiffeq on an output grid, and run GD beside it.

``integrate(objective, θ0, flow="gf", lr=h, times=...)`` solves θ' = F(θ) from
:data:`flows.fields.FIELDS`; ``compare(objective, θ0, lr, steps, flows=...)``
runs GD and each flow on the grid t = n·h and measures their drift
‖θ_GD(n) − θ_flow(n·h)‖ and loss gaps per step.

The ODE state is always real: a complex PF state θ ∈ Cᴰ is integrated as
(Re θ, Im θ) ∈ R²ᴰ. The solver runs under ``torch.no_grad``; gradients are
switched on only inside the fields. It advances ``chunk`` output times per
torchdiffeq call, so a long run records, checks for divergence and can be
interrupted between chunks without losing what it computed.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torchdiffeq import odeint

from .fields import COMPLEX_FIELDS, FIELDS, get_field, pf_coefficient
from .gd import _initial, _progress, check_count, check_positive, gradient_descent, loss_bound
from .objective import Objective
from .spectrum import EigenTracker, NonFiniteSpectrumError, top_eigenpairs
from .trajectory import Recorder, Trajectory

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED_METHODS = ("rk4", "euler", "midpoint", "explicit_adams", "implicit_adams")
METHODS = ADAPTIVE_METHODS + FIXED_METHODS


class _Diverged(Exception):
    pass


@dataclass
class Comparison:
    """GD and flows on one grid t = n·h.

    Attributes:
        gd: the GD trajectory (states kept in full for the drift).
        flows: flow name → its trajectory.
        drift: flow name → (n+1,) ‖θ_GD(n) − Re θ_flow(n·h)‖.
        loss_gap: flow name → (n+1,) E(θ_flow(n·h)) − E(θ_GD(n)).
    """

    gd: Trajectory
    flows: dict[str, Trajectory]
    drift: dict[str, np.ndarray] = field(default_factory=dict)
    loss_gap: dict[str, np.ndarray] = field(default_factory=dict)


def _time_grid(times, steps: int | None, lr: float, dtype: torch.dtype) -> Tensor:
    if times is None:
        if steps is None:
            raise ValueError("give either times (increasing output times) or steps (grid t = n·lr)")
        steps = check_count("steps", steps, minimum=1)
        return torch.arange(steps + 1, dtype=torch.float64) * lr
    t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if t.numel() < 2:
        raise ValueError(f"times must hold at least two output times, got {t.numel()}")
    if not bool(torch.isfinite(t).all()) or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("times must be finite and strictly increasing")
    return t


def stiffness(objective: Objective, theta: Tensor, flow: str, lr: float) -> float:
    """An estimate of the largest rate |∂F/∂θ| of the flow at θ (for explicit step-size bounds).

    GF: |λ|max; IGR: |λ|max(1 + h|λ|max/2); PF: max |c(hλ)λ| over the extreme pair.
    """
    theta_r = theta.real if theta.is_complex() else theta
    lam = float(top_eigenpairs(objective, theta_r.detach(), 1, "LM", tol=1e-2).values[0])
    a = abs(lam)
    if flow.startswith("pf"):
        return max(a, float(abs(pf_coefficient(torch.tensor(lr * lam)) * lam)))
    if flow in ("igr", "third_order"):
        return a * (1 + lr * a / 2 + (lr * a) ** 2 / 3)
    return a


def integrate(
    objective: Objective,
    theta0: Tensor | None = None,
    flow: str = "gf",
    lr: float = 0.1,
    times: Sequence[float] | Tensor | None = None,
    method: str = "dopri5",
    *,
    steps: int | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: float | None = None,
    max_num_steps: int = 5_000,
    k: int = 10,
    tracker: EigenTracker | None = None,
    eig_tol: float = 1e-3,
    eig_refresh: float = 0.0,
    states: str = "full",
    projection_size: int = 64,
    chunk: int = 16,
    max_loss: float | None = None,
    progress: bool = False,
) -> Trajectory:
    """Solve θ' = F_flow(θ; h=lr) from θ0 and record θ at ``times`` (or at t = n·lr, n ≤ steps).

    Args:
        flow: one of ``gf``, ``igr``, ``third_order``, ``pf``, ``pf_topk``, ``pf_topk_igr``.
        method: a torchdiffeq method: adaptive ``dopri5`` (default), ``dopri8``,
            ``bosh3``, ``adaptive_heun``, ``fehlberg2``; fixed ``rk4``, ``euler``,
            ``midpoint``, ``explicit_adams``, ``implicit_adams``.
        rtol, atol: tolerances of adaptive methods.
        step_size: fixed-step size; default min(lr, 1/stiffness(θ0)) (a stability bound).
        max_num_steps: solver steps allowed per chunk before it gives up.
        k, tracker: top-k eigenpairs for ``pf_topk`` (a warm-started EigenTracker).
        eig_tol: residual tolerance of that tracker (when integrate makes it).
        eig_refresh: re-solve the eigenpairs only after this much flow time
            (0: at every field evaluation; ``lr``: about once per GD step).
        states, projection_size: what to keep of θ (``full``, ``projection``, ``none``).
        max_loss: stop (status ``diverged``) past this loss; ``None`` means
            1e12·max(1, |E(θ₀)|), so a blow-up is caught before it overflows.

    Returns:
        a :class:`Trajectory`; ``pf`` states are complex and its metrics hold
        the loss of the real part and ``imag_norm`` = ‖Im θ‖. A solver failure
        (step underflow, too many steps) returns what was computed with status
        ``"failed"`` and a ``solver_failure`` event saying where and what to try.
    """
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a flows.Objective, got {type(objective).__name__}")
    fieldfn = get_field(flow)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices: {', '.join(METHODS)}")
    lr = check_positive("lr", lr)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    chunk = check_count("chunk", chunk, minimum=1)
    max_num_steps = check_count("max_num_steps", max_num_steps, minimum=1)
    theta = _initial(objective, theta0)
    if theta.is_complex() and flow not in COMPLEX_FIELDS:
        raise TypeError(f"flow {flow!r} needs a real θ0 (only {sorted(COMPLEX_FIELDS)} run in Cᴰ)")
    grid = _time_grid(times, steps, lr, theta.real.dtype)
    is_complex = flow in COMPLEX_FIELDS
    if is_complex and not theta.is_complex():
        theta = theta.to(torch.complex128 if theta.dtype == torch.float64 else torch.complex64)
    options: dict = {}
    if flow in ("pf_topk", "pf_topk_igr"):
        k = check_count("k", k, minimum=1)
        tracker = tracker or EigenTracker(k=min(k, objective.dim), tol=check_positive("eig_tol", eig_tol),
                                          method="dense" if objective.dim <= 300 else "auto")
        options = {"tracker": tracker, "refresh": check_positive("eig_refresh", eig_refresh, allow_zero=True)}
    if method in FIXED_METHODS:
        if step_size is None:
            step_size = min(lr, 1.0 / max(stiffness(objective, theta, flow, lr), 1e-12))
        solver_options = {"step_size": check_positive("step_size", step_size)}
    else:
        solver_options = {"max_num_steps": max_num_steps}

    dim = objective.dim
    counter = {"evals": 0, "t": float(grid[0])}

    def pack(z: Tensor) -> Tensor:
        return torch.view_as_real(z).reshape(-1) if is_complex else z

    def unpack(y: Tensor) -> Tensor:
        return torch.view_as_complex(y.reshape(dim, 2)) if is_complex else y

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        counter["evals"] += 1
        counter["t"] = float(t)
        try:
            out = pack(fieldfn(objective, unpack(y), lr, k=k, t=float(t), **options))
        except (NonFiniteSpectrumError, torch.linalg.LinAlgError) as err:  # the state has blown up
            raise _Diverged(f"eigendecomposition failed at t={float(t):.6g}: {err}") from None
        if not bool(torch.isfinite(out).all()):
            raise _Diverged(f"non-finite vector field at t={float(t):.6g}")
        return out

    rec = Recorder(dim, states, projection_size)

    def record(t: float, z: Tensor) -> float:
        real = z.real.contiguous() if z.is_complex() else z
        loss, grad = objective.loss_and_grad(real)
        row = {"loss": float(loss), "grad_norm": float(torch.linalg.vector_norm(grad)),
               "evals": counter["evals"]}
        if is_complex:
            row["imag_norm"] = float(torch.linalg.vector_norm(z.imag))
        rec.add(t, z, **row)
        return row["loss"]

    config = {"kind": "flow", "flow": flow, "lr": lr, "method": method, "rtol": rtol, "atol": atol,
              "step_size": step_size, "k": k if flow.startswith("pf_topk") else None,
              "eig_refresh": eig_refresh if flow.startswith("pf_topk") else None, "objective": objective.name,
              "dtype": str(theta.dtype), "device": str(theta.device)}
    status = "complete"
    y = pack(theta)
    loss0 = record(float(grid[0]), theta)
    max_loss = loss_bound(max_loss, loss0)
    bar = _progress(len(grid) - 1, progress, flow)
    tgrid = grid.to(dtype=y.dtype if not is_complex else theta.real.dtype, device=y.device)
    i = 0
    step_chunk = chunk
    try:
        with torch.no_grad():
            while i < len(grid) - 1:
                seg = tgrid[i:i + step_chunk + 1]
                try:
                    sol = odeint(rhs, y, seg, method=method, rtol=rtol, atol=atol, options=solver_options)
                except (_Diverged, AssertionError) as err:
                    if len(seg) > 2:  # redo this chunk one grid interval at a time, keeping what can be reached
                        step_chunk = 1
                        continue
                    if isinstance(err, _Diverged):
                        rec.events.append({"kind": "divergence", "time": counter["t"], "step": i,
                                           "reason": str(err)})
                        status = "diverged"
                        break
                    # torchdiffeq asserts on 'underflow in dt' and 'max_num_steps exceeded'
                    hint = ("the flow is stiff here: try method='rk4' with a smaller step_size, "
                            "looser rtol/atol, or a smaller lr" if "underflow" in str(err)
                            else "raise max_num_steps, loosen rtol/atol, or use a fixed-step method")
                    rec.events.append({"kind": "solver_failure", "time": counter["t"], "step": i,
                                       "reason": str(err), "suggestion": hint})
                    warnings.warn(f"{flow} integration stopped at t={counter['t']:.6g}: {err}; {hint}",
                                  RuntimeWarning, stacklevel=2)
                    status = "failed"
                    break
                diverged = False
                for t, yy in zip(seg[1:], sol[1:]):
                    loss = record(float(t), unpack(yy))
                    if not math.isfinite(loss) or loss > max_loss:
                        rec.events.append({"kind": "divergence", "time": float(t), "step": len(rec.times) - 1,
                                           "loss": loss, "reason": "loss non-finite or above max_loss"})
                        diverged = True
                        break
                if diverged:
                    status = "diverged"
                    break
                y = sol[-1]
                bar.update(len(seg) - 1)
                i += len(seg) - 1
    except KeyboardInterrupt:
        status = "interrupted"
        rec.events.append({"kind": "interrupted", "time": rec.times[-1], "step": len(rec.times) - 1})
    finally:
        bar.close()
    if tracker is not None:
        config["eigen_matvecs"] = tracker.total_matvecs
    config["field_evaluations"] = counter["evals"]
    return rec.build(config, status)


def compare(
    objective: Objective,
    theta0: Tensor | None = None,
    lr: float = 0.1,
    steps: int = 50,
    flows: Sequence[str] = ("gf", "igr", "pf_topk"),
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    k: int = 10,
    states: str = "full",
    progress: bool = False,
    **kwargs,
) -> Comparison:
    """GD and each flow on the grid t = n·lr, n = 0..steps, with drift and loss gaps per step."""
    for name in flows:
        if name not in FIELDS:
            raise ValueError(f"unknown flow {name!r}; valid choices: {', '.join(FIELDS)}")
    theta = _initial(objective, theta0)
    gd = gradient_descent(objective, theta, lr, steps, states="full", progress=progress)
    result = Comparison(gd, {})
    for name in flows:
        traj = integrate(objective, theta, name, lr, steps=steps, method=method, rtol=rtol, atol=atol, k=k,
                         states="full", progress=progress, **kwargs)
        n = min(len(traj), len(gd))
        diff = np.real(traj.states[:n]) - gd.states[:n]
        result.drift[name] = np.linalg.norm(diff, axis=1)
        result.loss_gap[name] = traj.losses[:n] - gd.losses[:n]
        if states != "full":
            traj.states = None
            traj.state_mode = "none"
        result.flows[name] = traj
    return result


def local_error(
    objective: Objective,
    theta: Tensor | None = None,
    flow: str = "gf",
    lr: float = 0.1,
    *,
    method: str = "dopri8",
    rtol: float = 1e-13,
    atol: float = 1e-15,
    **kwargs,
) -> float:
    """‖θ_flow(h) − (θ − h∇E(θ))‖: how far one GD step lands from the flow after time h.

    Backward error analysis predicts O(h²) for GF, O(h³) for IGR and O(h⁴)
    for the third-order flow; on a quadratic the PF error is zero. Use float64
    and tight tolerances, or the solver error hides the O(h⁴) terms.
    """
    lr = check_positive("lr", lr)
    theta = _initial(objective, theta)
    gd_step = theta - lr * objective.grad(theta)
    traj = integrate(objective, theta, flow, lr, times=[0.0, lr], method=method, rtol=rtol, atol=atol, **kwargs)
    if traj.status != "complete":
        raise RuntimeError(f"the {flow} flow did not reach t = h = {lr}: status {traj.status}")
    return float(np.linalg.norm(np.real(traj.states[-1]) - gd_step.detach().cpu().numpy()))
