"""Named analytic objectives with closed-form gradients and Hessians.

``toys.get(name)`` returns an :class:`~flows.Objective` (float64 by default);
``toys.spec(name)`` the :class:`Toy` record with the closed forms used as test
oracles; ``toys.names()`` lists them. Every ``fn`` uses torch operations only,
so it continues analytically to complex θ (the principal flow needs that).

=============== ======================================= =========================
name            E(θ)                                    notes
=============== ======================================= =========================
pf-quadratic    θᵀAθ, A = diag(1, 0.01)                 PF paper; H = diag(2, 0.02)
saddle          ½x² − ½y² + ¼y⁴                         saddle at 0, minima y = ±1
cubic           ½x² + ¼y² + ⅓x³ + ½xy²                  non-quadratic, for BEA orders
linear          cᵀθ, c = (1, ½)                         a corridor everywhere
corridor-xy2    x + y²                                  a corridor on y = 0 only
sharp-valley    4x²(1 − y/2)² + ⅛(y(y − 2))²            curvature 8 at (0,0), 0 at (0,2)
scalar-product  ½(y − abx)², x = 2, y = 3/2             minima on ab = ¾ (IGR paper Fig. 1)
=============== ======================================= =========================
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .objective import Objective


@dataclass(frozen=True)
class Toy:
    """An analytic objective with its closed-form derivatives.

    Attributes:
        name, description: registry key and one line of what it is.
        fn: E, mapping a (D,) tensor to a 0-d tensor.
        grad, hessian: closed forms of ∇E (D,) and ∇²E (D, D), written out by
            hand (not by autograd) so that they are independent oracles.
        theta0: the default starting point.
    """

    name: str
    description: str
    fn: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]
    hessian: Callable[[Tensor], Tensor]
    theta0: tuple[float, ...]

    @property
    def dim(self) -> int:
        """D, the number of coordinates."""
        return len(self.theta0)

    def objective(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Objective:
        """The toy as an :class:`Objective` (θ₀ its start) in ``dtype`` on ``device``."""
        theta0 = torch.tensor(self.theta0, dtype=dtype, device=device)
        return Objective.from_function(self.fn, self.dim, theta0=theta0, name=self.name)


def _mat(rows, like: Tensor) -> Tensor:
    return torch.stack([torch.stack(list(r)) for r in rows]).to(like)


def _const(value: float, like: Tensor) -> Tensor:
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _vec(values, like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------- the toys
_PF_A = (1.0, 0.01)


def _pf_quadratic(t: Tensor) -> Tensor:
    return _PF_A[0] * t[0] ** 2 + _PF_A[1] * t[1] ** 2


def _saddle(t: Tensor) -> Tensor:
    x, y = t[0], t[1]
    return 0.5 * x ** 2 - 0.5 * y ** 2 + 0.25 * y ** 4


def _cubic(t: Tensor) -> Tensor:
    x, y = t[0], t[1]
    return 0.5 * x ** 2 + 0.25 * y ** 2 + x ** 3 / 3 + 0.5 * x * y ** 2


_LINEAR_C = (1.0, 0.5)


def _linear(t: Tensor) -> Tensor:
    return _LINEAR_C[0] * t[0] + _LINEAR_C[1] * t[1]


def _corridor_xy2(t: Tensor) -> Tensor:
    return t[0] + t[1] ** 2


_SHARP = 8.0  # curvature of the sharp minimum along x


def _sharp_valley(t: Tensor) -> Tensor:
    """E = ½·s·x²·(1 − y/2)² + ⅛·(y(y − 2))², s = 8.

    The minimum valley x = 0 has curvature s(1 − y/2)² across it: 8 at y = 0,
    0 at y = 2. GD with h·8 > 2 cannot stay near (0, 0) and drifts along the
    valley towards the flat end, as the PF predicts and GF/IGR do not.
    """
    x, y = t[0], t[1]
    return 0.5 * _SHARP * x ** 2 * (1 - 0.5 * y) ** 2 + 0.125 * (y * (y - 2)) ** 2


REGISTRY: dict[str, Toy] = {}


_PRODUCT_X, _PRODUCT_Y = 2.0, 1.5


def _scalar_product(t: Tensor) -> Tensor:
    return 0.5 * (_PRODUCT_Y - t[0] * t[1] * _PRODUCT_X) ** 2


def register(toy: Toy) -> Toy:
    """Add a toy to the registry (its name must be new)."""
    if toy.name in REGISTRY:
        raise ValueError(f"toy {toy.name!r} is already registered")
    REGISTRY[toy.name] = toy
    return toy


register(Toy(
    "pf-quadratic", "PF paper quadratic E = θᵀAθ, A = diag(1, 0.01)", _pf_quadratic,
    lambda t: torch.stack([2 * _PF_A[0] * t[0], 2 * _PF_A[1] * t[1]]),
    lambda t: torch.diag(_vec((2 * _PF_A[0], 2 * _PF_A[1]), t)),
    (-0.35, -0.2)))
register(Toy(
    "saddle", "saddle at 0 between minima y = ±1: E = x²/2 − y²/2 + y⁴/4", _saddle,
    lambda t: torch.stack([t[0], -t[1] + t[1] ** 3]),
    lambda t: _mat([[_const(1.0, t), _const(0.0, t)], [_const(0.0, t), -1 + 3 * t[1] ** 2]], t),
    (1.0, 1e-3)))
register(Toy(
    "cubic", "non-quadratic E = x²/2 + y²/4 + x³/3 + xy²/2", _cubic,
    lambda t: torch.stack([t[0] + t[0] ** 2 + 0.5 * t[1] ** 2, 0.5 * t[1] + t[0] * t[1]]),
    lambda t: _mat([[1 + 2 * t[0], t[1]], [t[1], 0.5 + t[0]]], t),
    (0.3, 0.4)))
register(Toy(
    "linear", "corridor everywhere: E = cᵀθ, c = (1, 1/2)", _linear,
    lambda t: _vec(_LINEAR_C, t),
    lambda t: torch.zeros(2, 2, dtype=t.dtype, device=t.device),
    (1.0, 1.0)))
register(Toy(
    "corridor-xy2", "corridor on the line y = 0: E = x + y²", _corridor_xy2,
    lambda t: torch.stack([torch.ones_like(t[0]), 2 * t[1]]),
    lambda t: torch.diag(_vec((0.0, 2.0), t)),
    (1.0, 0.0)))
register(Toy(
    "sharp-valley", "sharp minimum (curvature 8) at (0,0) beside a flat one at (0,2)", _sharp_valley,
    lambda t: torch.stack([
        _SHARP * t[0] * (1 - 0.5 * t[1]) ** 2,
        -0.5 * _SHARP * t[0] ** 2 * (1 - 0.5 * t[1]) + 0.5 * t[1] * (t[1] - 2) * (t[1] - 1)]),
    lambda t: _mat([
        [_SHARP * (1 - 0.5 * t[1]) ** 2, -_SHARP * t[0] * (1 - 0.5 * t[1])],
        [-_SHARP * t[0] * (1 - 0.5 * t[1]),
         0.25 * _SHARP * t[0] ** 2 + 0.5 * (3 * t[1] ** 2 - 6 * t[1] + 2)]], t),
    (0.05, 0.05)))

register(Toy(
    "scalar-product", "the two-parameter model of Barrett & Dherin 2021, Fig. 1: E = ½(y − abx)², x = 2, y = 3/2; "
    "its minima form the curve ab = y/x, flattest (λ = 2xy) at a = b", _scalar_product,
    lambda t: (t[0] * t[1] * _PRODUCT_X - _PRODUCT_Y) * _PRODUCT_X * torch.stack([t[1], t[0]]),
    lambda t: _mat([
        [(t[1] * _PRODUCT_X) ** 2, (2 * t[0] * t[1] * _PRODUCT_X - _PRODUCT_Y) * _PRODUCT_X],
        [(2 * t[0] * t[1] * _PRODUCT_X - _PRODUCT_Y) * _PRODUCT_X, (t[0] * _PRODUCT_X) ** 2]], t),
    (2.8, 3.5)))


def names() -> list[str]:
    """The registered toy names."""
    return sorted(REGISTRY)


def spec(name: str) -> Toy:
    """The :class:`Toy` record (with closed forms) for ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown toy {name!r}; valid choices: {', '.join(names())}")
    return REGISTRY[name]


def get(name: str, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Objective:
    """The toy ``name`` as an :class:`Objective` with ``theta0`` set, on ``device``.

    The device is checked: "cuda" without a CUDA device is named as such.
    """
    check_device(device)
    return spec(name).objective(dtype=dtype, device=device)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that exists here (a ValueError naming it and what is available otherwise)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r}: no CUDA device is available here (torch.cuda.is_available() is "
                         "False); use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(dev)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev
