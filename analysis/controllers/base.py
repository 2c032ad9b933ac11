"""The controller interface, the Constant baseline, and the adapter to ``torch.optim``.

A controller chooses the step of GD on a flat θ: given the step context
(θₙ, E(θₙ), gₙ, the objective) it returns a :class:`flows.StepDecision`
(rate hₙ, direction dₙ, and the inputs it used), and GD sets θₙ₊₁ = θₙ − hₙdₙ.
The same object drives an ordinary PyTorch loop through
:class:`ControllerOptimizer`, which flattens the parameters into θ and
evaluates the objective with the user's closure, so both forms run the same
arithmetic.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from flows import Controller, StepContext, StepDecision
from flows.dynamics.gd import decide
from flows.objective.layout import ParameterLayout
from flows.validate import check_positive

SETTING = "setting"


def state_field(default: Any = None, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that is the controller's working state, not a setting (no constructor argument)."""
    if factory is not None:
        return field(default_factory=factory, init=False, repr=False, compare=False, metadata={SETTING: False})
    return field(default=default, init=False, repr=False, compare=False, metadata={SETTING: False})


def companion(default: Any = None) -> Any:
    """A keyword-only constructor argument that is an object the controller uses (a detector), not a setting."""
    return field(default=default, kw_only=True, repr=False, compare=False, metadata={SETTING: False})


@dataclass(eq=False)
class StepController(Controller):
    """Base class of the step controllers: dataclasses whose fields are their settings, plus resumable state.

    Each subclass declares its settings as dataclass fields (validated in ``__post_init__``) and implements
    :meth:`decide`; :meth:`hyperparameters` is the fields. The state that changes from step to step lives in
    ``self.state`` (a dict of tensors and numbers), so :meth:`state_dict`/:meth:`load_state_dict` round-trip it.
    ``evaluations`` counts objective evaluations (loss or gradient) the controller made beyond the one at θₙ
    that the runner provides.
    """

    name: ClassVar[str] = "controller"
    uses_detector: ClassVar[bool] = False
    state: dict[str, Any] = state_field(factory=dict)
    evaluations: int = state_field(default=0)

    def decide(self, ctx: StepContext) -> StepDecision:  # pragma: no cover - interface
        """The step at ``ctx``: a :class:`flows.StepDecision` (rate, optional direction, recorded info)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """The settings (the constructor arguments that are not companions), as plain values, recorded with runs."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if f.init and f.metadata.get(SETTING, True)}

    def check_standalone(self) -> None:
        """Raise ValueError when the settings need a runner (``flows.gradient_descent``) to make sense."""

    def reset(self) -> None:
        """Forget the state (and the evaluation count): the next step starts as the first."""
        self.state = {}
        self.evaluations = 0

    def state_dict(self) -> dict[str, Any]:
        """The state and the settings it was made under, as ``torch.optim`` state dicts are (tensors cloned)."""
        return {"state": {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in self.state.items()},
                "evaluations": self.evaluations, "hyperparameters": self.hyperparameters()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; a ValueError when it was saved under other settings."""
        if not isinstance(state_dict, dict) or "state" not in state_dict:
            raise ValueError(f"{type(self).__name__}.load_state_dict needs the dict that state_dict() returned")
        saved = state_dict.get("hyperparameters", {})
        if saved and saved != self.hyperparameters():
            raise ValueError(f"{type(self).__name__}: state was saved with hyperparameters {saved}, "
                             f"this controller has {self.hyperparameters()}")
        self.state = {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in state_dict["state"].items()}
        self.evaluations = int(state_dict.get("evaluations", 0))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


def _plain(value: Any) -> Any:
    """A setting as JSON writes it (tuples as lists)."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@dataclass(eq=False, repr=False)
class Constant(StepController):
    """Plain GD/SGD, the baseline: hₙ = ``lr``; with heavy-ball momentum β, dₙ = vₙ = βvₙ₋₁ + gₙ.

    (Momentum here belongs to the controller, so it also works in the
    ``torch.optim`` form; do not combine it with ``gradient_descent(momentum=)``.)

    Attributes:
        lr: the rate h > 0.
        momentum: β ∈ [0, 1).
    """

    name: ClassVar[str] = "constant"
    lr: float = 0.1
    momentum: float = 0.0

    def __post_init__(self) -> None:
        self.lr = check_positive("lr", self.lr)
        self.momentum = check_positive("momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")

    def decide(self, ctx: StepContext) -> StepDecision:
        """hₙ = ``lr``; with momentum the direction is the velocity βvₙ₋₁ + gₙ."""
        if not self.momentum:
            return StepDecision(self.lr)
        v = self.state.get("velocity")
        v = ctx.grad.clone() if v is None else self.momentum * v + ctx.grad
        self.state["velocity"] = v
        return StepDecision(self.lr, v)


# ---------------------------------------------------------------------- torch.optim adapter
class ClosureObjective:
    """The loss seen through a ``closure`` as a function of the flat parameter vector θ.

    Implements the part of :class:`flows.Objective` controllers use: ``loss``,
    ``loss_and_grad``, ``grad`` and ``grad_and_hessian_grad``. Each evaluation
    writes θ into the parameters, calls the closure (which must return the
    loss and call ``backward()``), and reads the gradients. Within one
    optimizer step every call replays the same RNG state, so dropout masks
    match across a controller's extra evaluations.
    """

    def __init__(self, params: list[Tensor], closure: Callable[[], Tensor]) -> None:
        self.params = params
        self.closure = closure
        self.layout = ParameterLayout.of_tensors(params)
        self.dim = self.layout.dim
        self.parameter_shapes = list(self.layout.shapes)
        self.name = "closure"
        self.theta0 = None
        self._rng = torch.random.get_rng_state()
        self._cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def flat(self) -> Tensor:
        """The parameters as one flat θ (the layout's order)."""
        return self.layout.flatten(self.params)

    def write(self, theta: Tensor) -> None:
        """Copy a flat θ back into the parameters."""
        self.layout.write(self.params, theta)

    def _evaluate(self, theta: Tensor, create_graph: bool = False) -> tuple[Tensor, list[Tensor | None]]:
        self.write(theta)
        for p in self.params:
            p.grad = None
        torch.random.set_rng_state(self._rng)
        if self._cuda_rng is not None:
            torch.cuda.set_rng_state_all(self._cuda_rng)
        with torch.enable_grad():
            loss = self.closure()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError("the closure must return the loss as a one-element tensor (and call loss.backward())")
        return loss.detach().reshape(()), [p.grad for p in self.params]

    def _flat_grad(self, grads: list[Tensor | None]) -> Tensor:
        return torch.cat([(torch.zeros_like(p) if g is None else g.detach()).reshape(-1)
                          for p, g in zip(self.params, grads)])

    def loss(self, theta: Tensor) -> Tensor:
        """E(θ) through the closure (the parameters set to θ and restored)."""
        return self._evaluate(theta)[0]

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(E(θ), ∇E(θ)) through the closure."""
        loss, grads = self._evaluate(theta)
        return loss, self._flat_grad(grads)

    def grad(self, theta: Tensor) -> Tensor:
        """∇E(θ) through the closure."""
        return self.loss_and_grad(theta)[1]

    def grad_and_hessian_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Exact Hg; needs a closure that calls ``loss.backward(create_graph=True)``."""
        _, grads = self._evaluate(theta)
        if any(g is None or g.grad_fn is None for g in grads):
            raise ValueError("an exact Hessian-gradient product in the torch.optim form needs a closure that "
                             "calls loss.backward(create_graph=True); or use hvp='finite_difference'")
        g = self._flat_grad(grads)
        present = [x for x in grads if x is not None]  # all of them: checked above
        hg = torch.autograd.grad(present, self.params, grad_outputs=[x.detach() for x in present], allow_unused=True)
        for p in self.params:
            p.grad = None
        return g, self._flat_grad(list(hg))


class ControllerOptimizer(torch.optim.Optimizer):
    """Any :class:`StepController` as a ``torch.optim.Optimizer``.

    ``step(closure)`` flattens the parameters of every group into one θ, evaluates the loss and gradient
    with ``closure`` (the usual one: zero the gradients, compute the loss, call ``backward()``, return the
    loss), asks the controller for (h, d), and writes back, group by group,

        θ_g ← θ_g − (lr_g / lr₀) · h · d_g − lr_g · weight_decay_g · θ_g.

    **``lr`` is a schedule on the controller's step.** Each group has an ``"lr"``: for a controller with a
    rate of its own (``Constant``, ``WNGrad``'s initial rate, ``Alice``) it starts at that rate, lr₀; for the
    others (PAL, CLR, SPS_max, ALI-G, DAL-p) it starts at lr₀ = 1. The step the method chooses is multiplied by
    lr_g/lr₀ at every step, so a ``torch.optim.lr_scheduler`` (StepLR, LambdaLR, CosineAnnealingLR, …) or a
    hand edit scales each group's step exactly as it scales SGD's: for ``Constant`` this is SGD with that
    schedule. lr_g ≥ 0 (0 freezes the group).

    **Groups.** Per-group settings are ``lr`` and ``weight_decay`` (decoupled, as in AdamW: θ ← θ − lr·wd·θ,
    default 0) — e.g. no decay for biases and norms, another rate for the head. The controller's curvature
    probes (PAL's trial loss, DAL's Hg, Alice's glass gradients, the Polyak ratio E/‖g‖²) see the whole θ: all
    groups as one flat vector, with the unscaled step, so its decision is the one it would take on the whole
    model; the groups then scale it. The controller's own settings (``mu``, ``max_lr``, …) are for the whole
    θ and are refused in a group with a different value. They are read from ``param_groups[0]`` at every step
    (a hand edit changes the next step, validated as the constructor would). ``state_dict()`` carries the
    controller's state and the groups; ``last_info`` holds what the controller reported for the last step,
    with ``lr`` the rate applied to the first group.

    A step with a non-finite loss, gradient or proposed update is refused: the parameters keep their values,
    a ``RuntimeWarning`` is issued, ``refused_steps`` counts it and ``last_info["refused"]`` says why.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], controller: StepController) -> None:
        if not isinstance(controller, StepController):
            raise TypeError(f"controller must be a driftlab StepController, got {type(controller).__name__}")
        if getattr(controller, "detector", None) is not None:
            raise ValueError("detectors need a flows.Objective; use the controller with flows.gradient_descent, "
                             "or construct it with detector=None for the torch.optim form")
        controller.check_standalone()
        settings = {k: v for k, v in controller.hyperparameters().items() if k != "lr"}
        own = getattr(controller, "lr", None)
        self.reference_lr = float(own) if isinstance(own, (int, float)) and not isinstance(own, bool) else 1.0
        super().__init__(params, {**settings, "lr": self.reference_lr, "weight_decay": 0.0})
        self.controller = controller
        for i, group in enumerate(self.param_groups):
            self._check_group(i, group)
        self.steps = 0
        self.refused_steps = 0
        self.last_info: dict[str, Any] = {}

    def _check_group(self, i: int, group: dict) -> None:
        for key in ("lr", "weight_decay"):
            value = group[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{type(self).__name__}: param_groups[{i}][{key!r}] must be a finite number ≥ 0, "
                                 f"got {value!r}")
        if i > 0:
            first = self.param_groups[0]
            differing = [k for k in self.controller.hyperparameters() if k != "lr" and k in group
                         and _differs(group[k], first[k])]
            if differing:
                raise ValueError(f"{type(self).__name__}: param_groups[{i}] sets {differing[0]!r} = "
                                 f"{group[differing[0]]!r}, but {type(self.controller).__name__}'s settings are for "
                                 "the whole θ (its probes see all parameters as one vector); only 'lr' and "
                                 "'weight_decay' may differ between groups")

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One step: the closure's loss and gradient at the parameters, the controller's decision, the update.

        Args:
            closure: zeroes the gradients, computes the loss, calls ``backward`` and returns the loss (required).

        Returns:
            The loss at the parameters before the step.
        """
        if closure is None or not callable(closure):
            raise TypeError(f"{type(self).__name__}.step needs a closure that re-evaluates the model, calls "
                            "loss.backward() and returns the loss")
        self._sync_hyperparameters()
        for i, group in enumerate(self.param_groups):
            self._check_group(i, group)
        params = self._params()
        obj = ClosureObjective(params, closure)
        theta = obj.flat()
        loss, grad = obj.loss_and_grad(theta)
        if not (torch.isfinite(loss) and torch.isfinite(grad).all()):
            return self._refuse(obj, theta, loss, "non-finite loss or gradient")
        base = getattr(self.controller, "lr", None) or getattr(self.controller, "base_lr", None) or 0.0
        # ClosureObjective implements the part of Objective that controllers use
        ctx = StepContext(self.steps, float(self.steps), theta, loss, grad, obj, base)  # type: ignore[arg-type]
        decision = decide(self.controller, ctx)  # the runner's rules: a float is a rate, a negative rate is refused
        direction = grad if decision.direction is None else decision.direction
        scale, decay = self._group_coefficients(params)
        new = theta * (1.0 - decay) - (decision.lr * scale) * direction
        if not (math.isfinite(decision.lr) and torch.isfinite(new).all()):
            return self._refuse(obj, theta, loss, f"non-finite update (rate {decision.lr!r})")
        obj.write(new)
        for p, g in zip(params, obj.layout.split(grad)):
            p.grad = g.clone()  # leave the gradient at θₙ, as a plain optimizer would
        self.steps += 1
        first = self.param_groups[0]
        self.last_info = {**decision.info, "lr": decision.lr * first["lr"] / self.reference_lr}
        return loss

    def _group_coefficients(self, params: list[Tensor]) -> tuple[Tensor | float, Tensor | float]:
        """Per coordinate of θ: the schedule factor lr_g/lr₀ and the decoupled decay lr_g·wd_g.

        Plain numbers when there is one group.
        """
        if len(self.param_groups) == 1:
            group = self.param_groups[0]
            return group["lr"] / self.reference_lr, group["lr"] * group["weight_decay"]
        owner = {id(p): group for group in self.param_groups for p in group["params"]}
        scale = torch.cat([torch.full((p.numel(),), owner[id(p)]["lr"] / self.reference_lr, dtype=p.dtype,
                                      device=p.device) for p in params])
        decay = torch.cat([torch.full((p.numel(),), owner[id(p)]["lr"] * owner[id(p)]["weight_decay"], dtype=p.dtype,
                                      device=p.device) for p in params])
        return scale, decay

    def _sync_hyperparameters(self) -> None:
        """Apply the group's controller settings that differ from the controller's (a hand edit changed them).

        ``lr`` and ``weight_decay`` are the optimizer's, not the controller's.
        """
        current = {k: v for k, v in self.controller.hyperparameters().items() if k != "lr"}
        group = self.param_groups[0]
        changed = {k: group[k] for k in current if k in group and _differs(group[k], current[k])}
        if not changed:
            return
        settings = {**self.controller.hyperparameters(), **changed}
        try:
            checked = type(self.controller)(**settings)  # the constructor's validation, on the new values
        except (TypeError, ValueError) as err:
            raise ValueError(f"{type(self).__name__}: param_groups[0] set {changed}, which "
                             f"{type(self.controller).__name__} refuses: {err}") from None
        for key in changed:
            setattr(self.controller, key, getattr(checked, key))
        for key, value in self.controller.hyperparameters().items():
            if key != "lr":
                for g in self.param_groups:
                    g[key] = value  # normalised as the controller holds them (e.g. betas as a list)

    def _refuse(self, obj: ClosureObjective, theta: Tensor, loss: Tensor, why: str) -> Tensor:
        obj.write(theta)
        self.refused_steps += 1
        self.last_info = {"refused": why}
        warnings.warn(f"{type(self).__name__}: step {self.steps} refused ({why}); parameters left unchanged",
                      RuntimeWarning, stacklevel=3)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state (``torch.optim`` layout) with the controller's state inside."""
        out = super().state_dict()
        out["controller"] = self.controller.state_dict()
        out["driftlab_steps"] = self.steps
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the optimizer and its controller from :meth:`state_dict`."""
        state_dict = dict(state_dict)
        ctrl = state_dict.pop("controller", None)
        self.steps = int(state_dict.pop("driftlab_steps", 0))
        if ctrl is None:
            raise ValueError("this state dict has no 'controller' entry: it was not saved by a driftlab optimizer")
        super().load_state_dict(state_dict)
        self._sync_hyperparameters()  # the group's saved settings before the controller's state
        self.controller.load_state_dict(ctrl)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) != list(b)
    return a != b


def optimizer_class(controller_cls: type[StepController]) -> type[ControllerOptimizer]:
    """``XOptimizer(params, **settings)`` for a controller class ``X`` of one's own.

    driftlab's controllers have explicit classes in :mod:`analysis.controllers.torch_optim`.
    """

    class Generated(ControllerOptimizer):
        def __init__(self, params: Iterable[Tensor] | Iterable[dict], **settings: Any) -> None:
            super().__init__(params, controller_cls(**settings))

    Generated.__name__ = Generated.__qualname__ = f"{controller_cls.__name__}Optimizer"
    Generated.__doc__ = (f"``torch.optim`` form of :class:`{controller_cls.__name__}`: "
                         f"``{controller_cls.__name__}Optimizer(model.parameters(), **settings)``.")
    Generated.__module__ = controller_cls.__module__
    return Generated
