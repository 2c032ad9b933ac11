"""The module adapter: a ``torch.nn.Module``, a loss and data as the pieces of a full-batch objective.

E(θ) = Σ_b w_b · loss_fn(model_θ(x_b), y_b) over micro-batches b, with w_b = n_b/N
for a mean-reduced loss and 1/N for a summed one; θ is substituted with
``torch.func.functional_call`` (the module is never modified), and
:class:`StatefulLayers` keeps dropout and running statistics out of E.

BatchNorm (and other layers with running statistics): running statistics are
never read in train mode and never written in any mode; the module's buffers
stay as they are. In train mode each micro-batch is normalised by its own
statistics: with ``batch_size`` None (one micro-batch) these are the full-batch
statistics; with smaller micro-batches the loss depends on ``batch_size``
("ghost" batch norm; a warning says so), and in data-parallel runs each rank
normalises by its shard's statistics.

Parameters must be real: a complex parameter is refused (a real loss of complex
parameters has no holomorphic gradient; split it into real and imaginary
parts). Non-finite inputs or targets are refused, naming the micro-batch.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from .autodiff import graph_nodes
from .layout import ParameterLayout

Piece = Callable[[Tensor], Tensor]


class ModuleParts:
    """The pieces of E split at the model's output, for products that need it (Gauss–Newton).

    ``outputs(θ, i)`` = model_θ(x_i) and ``loss(out, i, θ)`` = w_i · loss_fn(out, y_i), so E(θ) = Σᵢ loss(outputs(θ, i),
    i, θ).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 batches: list[tuple[Tensor, Tensor]], layout: ParameterLayout, n_total: int,
                 loss_reduction: str, layers: StatefulLayers) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.batches = batches
        self.layout = layout
        self.layers = layers
        self.weights = [len(x) / n_total if loss_reduction == "mean" else 1.0 / n_total for x, _ in batches]
        self.frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
        self.buffers = dict(model.named_buffers())
        self._cache: dict[tuple, list[tuple[Tensor, Tensor]]] = {}

    def data(self, theta: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """Micro-batch i on θ's device, in θ's (real) dtype when the data are floating point."""
        key = (theta.device, theta.dtype)
        if key not in self._cache:
            real = theta.real.dtype if theta.is_complex() else theta.dtype
            self._cache[key] = [(to_device(x, theta.device, real), to_device(y, theta.device, real))
                                for x, y in self.batches]
        return self._cache[key][i]

    def outputs(self, theta: Tensor, i: int) -> Tensor:
        """The model's output on micro-batch i at θ; attention runs on PyTorch's math kernel.

        The fused (flash, memory-efficient) kernels have no second derivative, so Hessian-vector products through them
        would fail.
        """
        x, _ = self.data(theta, i)
        with self.layers.evaluation(theta.device, i) as no_stats, sdpa_kernel(SDPBackend.MATH):
            values = {**self.layout.unflatten(theta), **self.frozen, **self.buffers, **no_stats}
            return torch.func.functional_call(self.model, values, (x,))

    def probe(self, theta: Tensor, n: int = 8) -> Tensor:
        """The (unweighted) loss on the first ≤ n examples of micro-batch 0, with graph.

        A cheap E-like function for one-time checks of the autograd graph.
        """
        x, y = self.data(theta, 0)
        with self.layers.evaluation(theta.device, 0) as no_stats, sdpa_kernel(SDPBackend.MATH):
            values = {**self.layout.unflatten(theta), **self.frozen, **self.buffers, **no_stats}
            out = torch.func.functional_call(self.model, values, (x[:n],))
        return check_scalar(self.loss_fn(out, y[:n]), "loss_fn")

    def loss(self, out: Tensor, i: int, theta: Tensor) -> Tensor:
        """Micro-batch ``i``'s weighted loss of the model output ``out`` (a scalar)."""
        _, y = self.data(theta, i)
        return self.weights[i] * check_scalar(self.loss_fn(out, y), "loss_fn")

    def pieces(self) -> list[Piece]:
        """One loss piece per micro-batch: θ ↦ w_b · loss_fn(model_θ(x_b), y_b)."""
        def make(i: int) -> Piece:
            return lambda theta: self.loss(self.outputs(theta, i), i, theta)
        return [make(i) for i in range(len(self.batches))]


def check_deterministic(model: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                        batch: tuple[Tensor, Tensor], layout: ParameterLayout, theta0: Tensor,
                        layers: StatefulLayers) -> None:
    """Fail early on a non-scalar or random loss: two evaluations on a slice of the first micro-batch."""
    x0, y0 = batch
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        real, n_probe = theta0.dtype, min(len(x0), 8)
        x0, y0 = to_device(x0[:n_probe], theta0.device, real), to_device(y0[:n_probe], theta0.device, real)
        values = []
        with torch.random.fork_rng(devices=[theta0.device] if theta0.device.type == "cuda" else []):
            for _ in range(2):
                with layers.evaluation(theta0.device, 0) as no_stats:
                    params = {**layout.unflatten(theta0), **frozen, **buffers, **no_stats}
                    try:
                        out = torch.func.functional_call(model, params, (x0,))
                    except (RuntimeError, TypeError, IndexError) as err:
                        raise ValueError(f"data: the model fails on inputs of shape {tuple(x0.shape)} and dtype "
                                         f"{x0.dtype} ({type(err).__name__}: {str(err).splitlines()[0]}); the inputs "
                                         "must be what the model's forward takes (feature size, dtype: convert "
                                         "integer features with .float())") from None
                values.append(check_loss(loss_fn, out, y0))
        if not torch.equal(values[0], values[1]) and not bool(values[0].isnan()):
            raise ValueError("the loss of this model is random (two identical evaluations gave "
                             f"{float(values[0]):.6g} and {float(values[1]):.6g}): driftlab needs a deterministic "
                             "E(θ); random layers other than nn.Dropout* must be switched off, or pass "
                             "stochastic_seed=N to evaluate under a fixed random state")


def once_differentiable_layers(model: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                               batch: tuple[Tensor, Tensor], layout: ParameterLayout, theta0: Tensor,
                               layers: StatefulLayers) -> list[str]:
    """Where E's graph runs an ``autograd.Function`` whose backward is ``@once_differentiable``.

    "layer 'name' (Type, Function F)" per place (the innermost module whose forward made it; "loss_fn" outside every
    module).

    Double backward does not fail there: it treats the saved tensors of that backward as constants and drops
    their second derivatives without an error (a tanh written so gives Hessian-vector products 53% off), so
    the objective refuses second-order products on such a model (:meth:`Objective.check_second_order`).
    One forward pass with graph on a slice of the first micro-batch, walked node by node.
    """
    def search(roots: list[Any], stop: set[Any]) -> list[tuple[Any, str]]:
        return [(node, f"Function {node._forward_cls.__name__}") for node in once_differentiable_nodes(roots, stop)]

    return graph_search(model, loss_fn, batch, layout, theta0, layers, search)


def graph_search(model: torch.nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 batch: tuple[Tensor, Tensor], layout: ParameterLayout, theta0: Tensor, layers: StatefulLayers,
                 search: Callable[[list[Any], set[Any]], list[tuple[Any, str]]],
                 mode: Any = None) -> list[str]:
    """The places in E's graph where ``search`` (roots, stop) → [(node, what)] finds nodes.

    "layer 'name' (Type, what)" for the innermost module whose forward made the node, "loss_fn (what)" outside every
    module. One forward pass with graph on ≤ 8 examples of the first micro-batch (under the TorchFunctionMode ``mode``
    when given), module by module through forward hooks.
    """
    found: dict[Any, str] = {}
    x0, y0 = batch
    real, n_probe = (theta0.real.dtype if theta0.is_complex() else theta0.dtype), min(len(x0), 8)
    x0, y0 = to_device(x0[:n_probe], theta0.device, real), to_device(y0[:n_probe], theta0.device, real)

    def attribute(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            stop = {t.grad_fn for t in _tensors(args)}
            for node, what in search([t.grad_fn for t in _tensors(output)], stop):
                where = f"layer {name!r}" if name else "the model"
                found.setdefault(node, f"{where} ({type(module).__name__}, {what})")
        return hook

    handles = [m.register_forward_hook(attribute(n)) for n, m in model.named_modules()]
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    try:
        with torch.enable_grad(), torch.random.fork_rng(
                devices=[theta0.device] if theta0.device.type == "cuda" else []), (mode or nullcontext()):
            leaf = theta0.detach().clone().requires_grad_(True)
            with layers.evaluation(theta0.device, 0) as no_stats:
                params = {**layout.unflatten(leaf), **frozen, **dict(model.named_buffers()), **no_stats}
                loss = loss_fn(torch.func.functional_call(model, params, (x0,)), y0)
    finally:
        for handle in handles:
            handle.remove()
    if isinstance(loss, Tensor):
        for node, what in search([loss.grad_fn], set()):
            found.setdefault(node, f"loss_fn ({what})")
    return sorted(set(found.values()))


def _tensors(value: Any) -> list[Tensor]:
    """The tensors in a module's inputs or outputs (nested tuples, lists and dicts)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def once_differentiable_nodes(roots: list[Any], stop: set[Any]) -> list[Any]:
    """The custom-Function nodes with a ``@once_differentiable`` backward reachable from ``roots`` before ``stop``."""
    from torch.autograd.function import once_differentiable

    marker = once_differentiable(lambda ctx: None).__code__  # every such backward is this wrapper
    hits = []
    for node in graph_nodes(roots, stop):
        backward = getattr(getattr(node, "_forward_cls", None), "backward", None)
        if getattr(backward, "__code__", None) is marker:
            hits.append(node)
    return hits


_DROPOUT = (torch.nn.modules.dropout._DropoutNd,)
_RUNNING_STATS = (torch.nn.modules.batchnorm._NormBase,)


class StatefulLayers:
    """Train/eval modes, dropout and running statistics of a module during one evaluation.

    ``evaluation(device, index)`` is a context manager that sets the modes
    (per ``mode``; dropout off unless a seed is given; every submodule's own
    flag restored afterwards) and yields the buffers to substitute: None for
    the running statistics of normalisation layers in train mode, so that
    their forward pass uses batch statistics and writes nothing.
    """

    def __init__(self, model: torch.nn.Module, mode: str, seed: int | None) -> None:
        self.model = model
        self.mode = mode
        self.seed = seed
        self.modules = list(model.named_modules())
        self.dropouts = [m for _, m in self.modules if isinstance(m, _DROPOUT)]
        self.norms = [(name, m) for name, m in self.modules
                      if isinstance(m, _RUNNING_STATS) and m.track_running_stats]

    def _training(self, module: torch.nn.Module) -> bool:
        return module.training if self.mode == "current" else self.mode == "train"

    def warn_once(self, n_batches: int) -> None:
        """Warn once about layers that make E depend on how it is evaluated (dropout, train-mode norms)."""
        if self.seed is None and any(self._training(m) for m in self.dropouts):
            warnings.warn("the model has dropout layers in train mode: they are switched off in every evaluation "
                          "so that E(θ) is deterministic (pass stochastic_seed=N for fixed random masks, or "
                          "mode='eval' to silence this)", RuntimeWarning, stacklevel=3)
        if n_batches > 1 and any(self._training(m) for _, m in self.norms):
            warnings.warn(f"train-mode normalisation layers with {n_batches} micro-batches: each micro-batch is "
                          "normalised by its own statistics, so the loss depends on batch_size (batch_size=None "
                          "uses full-batch statistics; mode='eval' uses the running statistics)",
                          RuntimeWarning, stacklevel=3)

    @contextmanager
    def evaluation(self, device: torch.device, index: int):
        """A context for one evaluation on micro-batch ``index``: modes set, dropout fixed or off, stats not written."""
        if self.mode == "current" and self.seed is None and not self.dropouts and not self.norms:
            yield {}  # nothing to switch or substitute: skip the per-module bookkeeping on the hot path
            return
        saved = [(m, m.training) for _, m in self.modules]
        rng = None
        try:
            if self.mode != "current":
                for _, m in self.modules:
                    m.training = self.mode == "train"
            if self.seed is None:
                for m in self.dropouts:
                    m.training = False
            else:
                rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
                rng.__enter__()
                torch.manual_seed(self.seed + index)
            no_stats: dict[str, Any] = {}
            for name, m in self.norms:
                if m.training:
                    prefix = f"{name}." if name else ""
                    no_stats.update({prefix + b: None for b in ("running_mean", "running_var", "num_batches_tracked")})
            yield no_stats
        finally:
            if rng is not None:
                rng.__exit__(None, None, None)
            for m, flag in saved:
                m.training = flag


def check_finite(batches: list[tuple[Tensor, Tensor]]) -> None:
    """Refuse NaN or Inf in the data, naming the micro-batch and whether inputs or targets."""
    for i, (x, y) in enumerate(batches):
        for what, t in (("inputs", x), ("targets", y)):
            if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"data: the {what} of micro-batch {i} hold {bad} NaN/Inf entries; "
                                 "clean the data before building the objective")


def check_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], out: Tensor, y: Tensor) -> Tensor:
    """loss_fn(out, y) on a probe batch, its failures and silent broadcasts named in driftlab's words."""
    try:
        value = loss_fn(out, y)
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"loss_fn fails on model outputs of shape {tuple(out.shape)} ({out.dtype}) and targets of "
                         f"shape {tuple(y.shape)} ({y.dtype}): {type(err).__name__}: {str(err).splitlines()[0]}; the "
                         "targets must fit the loss (same shape as the outputs for MSE, class indices (N,) of dtype "
                         "long for cross-entropy)") from None
    if isinstance(value, Tensor) and value.numel() == len(out) > 1 and value.ndim >= 1:
        raise ValueError(f"loss_fn returns one loss per example (shape {tuple(value.shape)} on a probe of {len(out)} "
                         "examples): "
                         "driftlab needs the mean (or sum) over the batch as a scalar; reduce it (reduction='mean', "
                         "or .mean() in your function, with loss_reduction='sum' for a sum)")
    value = check_scalar(value, "loss_fn")
    if isinstance(out, Tensor) and isinstance(y, Tensor) and out.shape != y.shape:
        watch = _TargetBroadcasts(y)
        with watch:
            loss_fn(out, y)
        if watch.found:
            a_shape, b_shape, joint = watch.found[0]
            raise ValueError(f"data: in loss_fn the targets (shape {tuple(y.shape)}) meet a tensor of shape "
                             f"{a_shape if a_shape != tuple(y.shape) else b_shape} in an elementwise op that "
                             f"broadcasts to {joint} (every output against every target, silently; the model's "
                             f"outputs have shape {tuple(out.shape)}); reshape the targets to the outputs' shape")
    return value


class _TargetBroadcasts(TorchFunctionMode):
    """Records elementwise ops inside a loss function where the targets broadcast into a silent outer product.

    That is a result larger than both operands: targets (N,) against outputs (N, 1) give (N, N).
    """

    def __init__(self, targets: Tensor) -> None:
        super().__init__()
        self.storage = targets.untyped_storage().data_ptr()
        self.found: list[tuple[tuple, tuple, tuple]] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        result = func(*args, **(kwargs or {}))
        tensors = [a for a in args[:2] if isinstance(a, Tensor)]
        if len(tensors) == 2 and isinstance(result, Tensor) and tensors[0].shape != tensors[1].shape:
            first, second = tensors
            ours = [t.untyped_storage().data_ptr() == self.storage for t in tensors]
            if any(ours) and not all(ours) and _broadcastable(first.shape, second.shape):
                joint = torch.broadcast_shapes(first.shape, second.shape)
                if tuple(result.shape) == tuple(joint) and result.numel() > max(first.numel(), second.numel()):
                    self.found.append((tuple(first.shape), tuple(second.shape), tuple(joint)))
        return result


def _broadcastable(a: torch.Size, b: torch.Size) -> bool:
    try:
        torch.broadcast_shapes(a, b)
    except RuntimeError:
        return False
    return True


def check_scalar(value: Tensor, what: str) -> Tensor:
    """A loss function's value as a 0-d floating tensor, else an error naming ``what``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, got {type(value).__name__}")
    if value.numel() != 1 or value.ndim > 1:
        raise ValueError(f"{what} must return a scalar loss, got shape {tuple(value.shape)}")
    if not (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{what} must return a floating-point loss, got dtype {value.dtype} (an integer loss has no "
                        "gradient)")
    return value.reshape(())


def to_device(t: Tensor, device: torch.device, real_dtype: torch.dtype) -> Tensor:
    """``t`` on ``device``; floating tensors also in ``real_dtype``."""
    if t.is_floating_point():
        return t.to(device=device, dtype=real_dtype)
    return t.to(device=device)


def split_batches(data, batch_size: int | None) -> list[tuple[Tensor, Tensor]]:
    """The data as micro-batches of at most ``batch_size`` examples (None: one batch)."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data inputs and targets differ in length: {len(x)} vs {len(y)}")
        n = len(x)
        step = n if batch_size is None else batch_size
        batches = [(x[i:i + step], y[i:i + step]) for i in range(0, n, max(step, 1))]
    elif isinstance(data, Iterable):
        batches = [tuple(b) for b in data]
        for b in batches:
            if len(b) != 2 or not all(isinstance(t, Tensor) for t in b):
                raise TypeError("each micro-batch in data must be an (inputs, targets) pair of tensors")
            if len(b[0]) != len(b[1]):
                raise ValueError(f"a micro-batch's inputs and targets differ in length: "
                                 f"{len(b[0])} vs {len(b[1])}")
    else:
        raise TypeError("data must be an (inputs, targets) tuple of tensors or an iterable of such pairs")
    batches = [b for b in batches if len(b[0]) > 0]
    if not batches:
        raise ValueError("data is empty: an objective needs at least one example")
    return batches


# moved to flows.objective.norms (kept importable from here)
from .norms import PlainBatchNorm, PlainLayerNorm, decomposed_norms  # noqa: E402,F401
