"""The loss as a function of one flat parameter vector.

Everything in driftlab (GD, flows, spectra, detectors, controllers) talks to an
:class:`Objective`: a map ``E: R^D -> R`` with

* ``loss(θ)``           E(θ), a 0-d tensor
* ``grad(θ)``           g = ∇E(θ), shape (D,)
* ``loss_and_grad(θ)``  (E, g) from one forward/backward pass
* ``hvp(θ, v)``         H v with H = ∇²E(θ); v of shape (D,) or (m, D)
* ``grad_and_hvp(θ, v)`` (g, H v) from one pass (cheaper than both apart)
* ``hessian(θ)``        dense H, shape (D, D), for small D only
* ``hessian_operator(θ)`` a matrix-like H at a fixed θ reusing one gradient graph

The device and dtype of every result follow θ. θ may be complex: then the loss
is the analytic continuation of E and ``grad``/``hvp`` return the holomorphic
derivatives (PyTorch's autograd returns the conjugate derivative of a
holomorphic function; it is conjugated back here).

A loss is a sum of *pieces* (one per micro-batch), each already weighted, so
the full-batch loss ``E = Σ_b w_b E_b`` never needs the whole batch in memory.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor

from .autodiff import bilinear_third_derivatives, graph_hvp, vjp
from .compiled import CompiledProducts
from .distributed import all_reduce_sum, broadcast_from_first, check_shards, resolve_group
from .hessian import HessianOperator
from .layout import ParameterLayout
from .modules import (
    ModuleParts,
    Piece,
    StatefulLayers,
    check_deterministic,
    check_finite,
    check_scalar,
    graph_search,
    once_differentiable_layers,
    once_differentiable_nodes,
    split_batches,
)
from .norms import exact_norms, faulty_third_order_nodes

HVP_METHODS = ("double_backward", "forward_over_reverse", "compiled")
BATCHING = ("auto", "vmap", "loop")
Batching = Literal["auto", "vmap", "loop"]
MODES = ("current", "eval", "train")


def _check_differentiable(fn: Callable[[Tensor], Tensor], theta: Tensor) -> None:
    """fn(θ) is a scalar with an autograd graph back to θ (else its gradient would be torch's raw error, or 0)."""
    with torch.enable_grad():
        leaf = theta.detach().clone().requires_grad_(True)
        value = check_scalar(fn(leaf), "fn")
    if not value.requires_grad:
        raise TypeError("fn's output has no autograd graph back to θ (it is constant, or computed with .detach(), "
                        ".item(), numpy or integer ops): driftlab differentiates fn, so write it with torch operations "
                        "on θ")


def _identity_reduce(t: Tensor) -> Tensor:
    return t


class Objective:
    """A scalar loss E(θ) of one flat parameter vector θ ∈ R^D (or C^D).

    Build one with :meth:`from_function` (analytic toys) or :meth:`from_module`
    (networks, full batch over micro-batches). The constructor itself takes
    the pieces directly: ``pieces`` is a sequence of callables ``θ -> scalar``
    whose sum is E.

    Args:
        pieces: callables mapping a (D,) tensor to a 0-d tensor; E = Σ pieces.
        dim: D, the length of θ.
        theta0: an initial point (D,), e.g. a network's current parameters.
        hvp_method: ``"double_backward"`` (reverse-over-reverse, default: the
            faster one on the benchmark) or ``"forward_over_reverse"``
            (``torch.func.jvp`` of ``torch.func.grad``; falls back to double
            backward, with a warning, where torch.func fails on a loss), or
            ``"compiled"``: the HVPs (reverse-over-reverse) and the pair vectors of
            :meth:`third_derivatives` traced and compiled per piece
            (:mod:`flows.objective.compiled`, with ``compile``'s backend when it
            names one; tens of seconds of compiling on first use, equal to
            eager to round-off; on failure a warning and the eager products
            from then on). Real θ only.
        name: a label for plots and saved results.
        reduce: applied to every accumulated loss/grad/HVP (identity on one
            process; a sum over ranks in data-parallel runs).
        compile: ``torch.compile`` the loss pieces used by ``loss`` and
            ``loss_and_grad`` (``True`` for the default backend, or a backend
            name). HVPs keep the eager pieces (compiled graphs do not support
            double backward) unless ``hvp_method="compiled"``. If compiling or
            running a compiled piece fails, a warning is issued once and the
            eager pieces are used from then on.
        batching: how a block of m products (HVPs of a (m, D) batch, the
            retained-graph operator's blocks, the pair vectors) is computed:
            ``"vmap"``, one batched backward (``is_grads_batched``) per block;
            ``"loop"``, m backward passes; ``"auto"`` (default), the loop on
            the CPU, where it was 1.0–2.1× faster on every benchmark model at
            one and two threads (``driftlab run bench-batching``), and vmap on
            other devices. The results agree to round-off. Where the batched
            double backward fails (torch's group norm), blocks loop whatever
            this says.
    """

    def __init__(
        self,
        pieces: Sequence[Piece],
        dim: int,
        *,
        theta0: Tensor | None = None,
        hvp_method: str = "double_backward",
        name: str = "objective",
        reduce: Callable[[Tensor], Tensor] = _identity_reduce,
        compile: bool | str = False,
        batching: Batching = "auto",
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if len(pieces) == 0:
            raise ValueError("an Objective needs at least one loss piece (got an empty data set?)")
        if hvp_method not in HVP_METHODS:
            raise ValueError(f"hvp_method must be one of {HVP_METHODS}, got {hvp_method!r}")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.batching = batching
        self.pieces = list(pieces)
        self.dim = dim
        self.hvp_method = hvp_method
        self.name = name
        self._reduce = reduce
        self._for_warned = False
        if compile not in (False, True) and not isinstance(compile, str):
            raise ValueError(f"compile must be False, True or a torch.compile backend name, got {compile!r}")
        self.compile = compile
        self._compiled = (CompiledProducts(self.pieces, compile if isinstance(compile, str) else "inductor")
                          if hvp_method == "compiled" else None)
        self._fast_pieces: list[Piece] | None = None
        # set by from_module: the layout of θ over the named parameters, and the module itself
        self.parameter_names: list[str] = []
        self.parameter_shapes: list[torch.Size] = []
        self.model: torch.nn.Module | None = None
        self.layout: ParameterLayout | None = None
        self.module_parts: ModuleParts | None = None
        self.dtype: torch.dtype | None = None  # from_module: the model's parameter dtype
        self._precisions_warned: set[torch.dtype] = set()
        self._first_order_only: list[str] | None = None  # found on the first second-order call
        self._faulty_third_order: list[str] | None = None  # found on the first third-order call
        self.batched_products: bool | None = None  # batched double backward works here (probed once)
        self.theta0 = None if theta0 is None else self.check_theta(theta0, "theta0").detach().clone()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_function(
        cls,
        fn: Callable[[Tensor], Tensor],
        dim: int,
        *,
        theta0: Tensor | Sequence[float] | None = None,
        name: str | None = None,
        hvp_method: str = "double_backward",
        batching: Batching = "auto",
    ) -> Objective:
        """E(θ) = fn(θ) for an analytic ``fn: (D,) tensor -> 0-d tensor``.

        ``fn`` must be written with torch operations (so that autograd, and
        analytic continuation to complex θ, work). Its output is checked to be
        a scalar right away: at θ0, or without θ0 at zeros in the default
        dtype and, if ``fn`` fails there (e.g. it closes over float64
        constants), in the other real precision. ``hvp_method`` and
        ``batching`` as in :class:`Objective`.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if theta0 is not None and not isinstance(theta0, Tensor):
            theta0 = torch.as_tensor(theta0, dtype=torch.get_default_dtype())
        obj = cls([fn], dim, theta0=theta0, name=name or str(getattr(fn, "__name__", "function")),
                  hvp_method=hvp_method, batching=batching)
        if obj.theta0 is not None:
            _check_differentiable(fn, obj.theta0)
            return obj
        # no θ0: probe at zeros in the default dtype, then in the other real precision, so that a function
        # closed over float64 (or float32) constants is accepted; report the first failure if none works
        errors: list[Exception] = []
        for dtype in dict.fromkeys((torch.get_default_dtype(), torch.float64, torch.float32)):
            try:
                _check_differentiable(fn, torch.zeros(dim, dtype=dtype))
                return obj
            except RuntimeError as err:  # a dtype clash; a non-scalar output (ValueError) is raised at once
                errors.append(err)
        raise RuntimeError(f"fn failed on zeros({dim}) in every real precision: {errors[0]}") from errors[0]

    @classmethod
    def from_module(
        cls,
        model: torch.nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]],
        *,
        batch_size: int | None = None,
        loss_reduction: Literal["mean", "sum"] = "mean",
        mode: Literal["current", "eval", "train"] = "current",
        hvp_method: str = "double_backward",
        name: str | None = None,
        reduce: Callable[[Tensor], Tensor] = _identity_reduce,
        total_size: int | None = None,
        process_group: Any = "auto",
        compile: bool | str = False,
        stochastic_seed: int | None = None,
        batching: Batching = "auto",
    ) -> Objective:
        """The full-batch loss of ``model`` on ``data`` as a function of its flat parameters.

        E(θ) = (1/N) Σ_b n_b · loss_fn(model_θ(x_b), y_b) for a mean-reduced
        ``loss_fn`` (``loss_reduction="mean"``), or Σ_b loss_fn(...) / N for a
        summed one, over micro-batches b of sizes n_b, N = Σ n_b. The result does
        not depend on the micro-batch size.

        Args:
            model: parameters with ``requires_grad`` make up θ, in
                ``named_parameters()`` order; the module is never modified
                (θ is substituted with ``torch.func.functional_call``).
            loss_fn: ``(outputs, targets) -> 0-d tensor``.
            data: ``(inputs, targets)`` tensors, split into ``batch_size``
                chunks; or an iterable of ``(inputs, targets)`` micro-batches.
            mode: ``"current"`` uses the module (and each submodule) in the
                train/eval mode it has at each call; ``"eval"``/``"train"`` set
                that mode during each evaluation only and restore every
                submodule's own mode afterwards.
            stochastic_seed: E is a deterministic function of θ: train-mode dropout is switched off
                (with a warning) unless this is an int, which fixes one dropout mask per micro-batch
                (seed + index; the global RNG untouched). A loss still random is refused.
            batch_size: examples per micro-batch when ``data`` is a pair of tensors (None: one batch).
            loss_reduction: how ``loss_fn`` reduces over examples, ``"mean"`` or ``"sum"``.
            name: a label for logs and trajectories (default: the model's class name).
            reduce: a reduction applied to every sum (the identity; a data-parallel all-reduce otherwise).
            compile: ``torch.compile`` the loss pieces for loss and gradient (True, or a backend name).
            hvp_method: ``"double_backward"``, ``"forward_over_reverse"`` or ``"compiled"`` (see :data:`HVP_METHODS`).
            batching: ``"auto"``, ``"vmap"`` or ``"loop"``: how a block of products is computed (:class:`Objective`).
            total_size: N, when ``data`` is one shard of a larger data set.
            process_group: data-parallel full batch with ``torch.distributed`` (``"auto"``: the default
                group when initialised; None: never reduce): each rank passes its shard, N is the sum
                of the shard sizes, and every sum is all-reduced, so every rank sees full-batch numbers.

        BatchNorm's running statistics (never read in train mode, never written), ghost batch norm,
        shard checks: see :mod:`flows.objective.modules` and :mod:`flows.objective.distributed`. Complex parameters and
        non-finite data are refused, naming them.
        """
        _check_module_arguments(model, loss_fn, loss_reduction, mode, stochastic_seed)
        layout = ParameterLayout.of(model)
        params = [p for p in model.parameters() if p.requires_grad]
        batches = split_batches(data, batch_size)
        check_finite(batches)
        n_total = sum(len(x) for x, _ in batches)
        group = resolve_group(process_group)
        if group is not None:
            if total_size is not None or reduce is not _identity_reduce:
                raise ValueError("process_group sums the shards itself: do not also pass total_size or reduce")
            n_total = check_shards(group, params, batches, n_total)
            reduce = all_reduce_sum(group)
        n_total = int(total_size) if total_size is not None else n_total
        layers = StatefulLayers(model, mode, stochastic_seed)
        parts = ModuleParts(model, loss_fn, batches, layout, n_total, loss_reduction, layers)
        pieces = parts.pieces()
        theta0 = layout.flatten(params).clone()
        if group is not None:  # one starting point for all ranks, as DistributedDataParallel does
            broadcast_from_first(theta0, group)
        obj = cls(pieces, theta0.numel(), theta0=theta0, hvp_method=hvp_method,
                  name=name or type(model).__name__, reduce=reduce, compile=compile, batching=batching)
        obj._attach(model, layout, parts)
        layers.warn_once(len(batches))
        check_deterministic(model, loss_fn, batches[0], layout, theta0, layers)
        return obj

    def _attach(self, model: torch.nn.Module, layout: ParameterLayout, parts: ModuleParts) -> None:
        """Keep what an objective built from a module knows of it: names, shapes, the module, its parts."""
        self.parameter_names, self.parameter_shapes = list(layout.names), list(layout.shapes)
        self.model = model
        self.layout = layout
        self.module_parts = parts
        assert self.theta0 is not None  # from_module sets it
        self.dtype = self.theta0.dtype

    # ------------------------------------------------------------------ checks
    def check_theta(self, theta: Tensor, argname: str = "theta") -> Tensor:
        """Validate θ: a 1-D floating or complex tensor of length D."""
        if not isinstance(theta, Tensor):
            raise TypeError(f"{argname} must be a torch.Tensor, got {type(theta).__name__}")
        if not (theta.is_floating_point() or theta.is_complex()):
            raise TypeError(f"{argname} must be a floating point or complex tensor, got dtype {theta.dtype}")
        if theta.ndim != 1 or theta.shape[0] != self.dim:
            raise ValueError(f"{argname} must have shape ({self.dim},), got {tuple(theta.shape)}")
        real = theta.real.dtype if theta.is_complex() else theta.dtype
        if self.dtype is not None and real != self.dtype and real not in self._precisions_warned:
            self._precisions_warned.add(real)
            warnings.warn(f"{argname} is {real} but {self.name}'s parameters are {self.dtype}: every result follows "
                          f"θ, so {self.name} is evaluated in {real} (the model and data cast to it), not in the "
                          f"model's {self.dtype}; pass {argname}.to({self.dtype}) to compute in the model's precision "
                          "(said once per objective and precision)", RuntimeWarning, stacklevel=3)
        return theta

    def _check_vectors(self, theta: Tensor, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
        if v.ndim not in (1, 2) or v.shape[-1] != self.dim:
            raise ValueError(f"v must have shape ({self.dim},) or (m, {self.dim}), got {tuple(v.shape)}")
        return v.to(device=theta.device, dtype=theta.dtype)

    # ------------------------------------------------------------------ evaluations
    def _first_order_pieces(self) -> list[Piece]:
        """The pieces for loss and gradient: compiled ones when ``compile`` is set (built lazily)."""
        if not self.compile:
            return self.pieces
        if self._fast_pieces is None:
            backend = self.compile if isinstance(self.compile, str) else "inductor"
            try:
                self._fast_pieces = [torch.compile(p, backend=backend, dynamic=False) for p in self.pieces]
            except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
                self._compile_failed(err)
                return self.pieces
        return self._fast_pieces

    def _compile_failed(self, err: Exception) -> None:
        warnings.warn(f"torch.compile of {self.name!r} failed ({type(err).__name__}: {str(err)[:200]}); "
                      "using the eager loss from now on", RuntimeWarning, stacklevel=3)
        self.compile, self._fast_pieces = False, None

    def _with_fallback(self, compute: Callable[[list[Piece]], Any]) -> Any:
        pieces = self._first_order_pieces()
        if pieces is self.pieces:
            return compute(pieces)
        try:
            return compute(pieces)
        except Exception as err:  # noqa: BLE001 - a compiled piece failed at run time
            self._compile_failed(err)
            return compute(self.pieces)

    def loss(self, theta: Tensor) -> Tensor:
        """E(θ), a 0-d tensor on θ's device.

        A measurement, with no graph. Differentiating it (torch.func transforms, or a θ that requires grad) would give
        zeros, so it is refused: use :meth:`grad`, :meth:`hvp`, :meth:`hessian`, or call the ``pieces`` (differentiable)
        yourself.
        """
        theta = self.check_theta(theta)
        if theta.requires_grad or is_functorch_wrapped_tensor(theta):
            raise TypeError("Objective.loss is a measurement without a graph (its derivatives would be zeros): use "
                            "Objective.grad / hvp / hessian / third_derivatives, or sum the differentiable pieces, "
                            "sum(piece(θ) for piece in objective.pieces)")
        theta = theta.detach()

        def compute(pieces: list[Piece]) -> Tensor:
            with torch.no_grad():
                return torch.stack([piece(theta) for piece in pieces]).sum()

        return self._reduce(self._with_fallback(compute))

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(E(θ), ∇E(θ)) from one forward and one backward pass per micro-batch."""
        theta = self.check_theta(theta).detach().requires_grad_(True)

        def compute(pieces: list[Piece]) -> tuple[Tensor, Tensor]:
            loss: Tensor | None = None
            grad: Tensor | None = None
            with torch.enable_grad():
                for piece in pieces:
                    value = piece(theta)
                    (g,) = torch.autograd.grad(value, theta, grad_outputs=torch.ones_like(value))
                    # the first piece's results are kept as they are: no zero-filled buffer, no extra add
                    loss = value.detach() if loss is None else loss + value.detach()
                    grad = g if grad is None else grad + g
            assert loss is not None and grad is not None  # there is at least one piece
            return loss, grad

        loss, grad = self._with_fallback(compute)
        if theta.is_complex():
            grad = grad.conj()
        return self._reduce(loss), self._reduce(grad)

    def grad(self, theta: Tensor) -> Tensor:
        """The gradient g = ∇E(θ), shape (D,)."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """H(θ) v for v of shape (D,) or a batch (m, D) → same shape."""
        return self.grad_and_hvp(theta, v)[1]

    def grad_and_hvp(self, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(g, H v) at θ, sharing the forward/backward pass between them."""
        theta = self.check_theta(theta).detach()
        v = self._check_vectors(theta, v)
        self.check_second_order(theta)
        if self._compiled is not None and not theta.is_complex() and v.numel() > 0:
            try:
                grad, hv = self._compiled.grad_and_hvp(theta, v)
                return self._reduce(grad), self._reduce(hv)
            except Exception as err:  # noqa: BLE001 - any tracing or compiler failure means: run eagerly
                self._compiled_failed(err)
        if self.hvp_method == "forward_over_reverse" and not theta.is_complex():
            try:
                return self._grad_and_hvp_forward(theta, v)
            except RuntimeError as err:  # e.g. "ZeroTensors are immutable" through F.mse_loss
                if not self._for_warned:
                    warnings.warn(f"forward-over-reverse HVP failed ({err}); using double backward",
                                  RuntimeWarning, stacklevel=2)
                    self._for_warned = True
                self.hvp_method = "double_backward"
        return self._grad_and_hvp_double_backward(theta, v)

    def _compiled_failed(self, err: Exception) -> None:
        warnings.warn(f"the compiled curvature products of {self.name!r} failed ({type(err).__name__}: "
                      f"{str(err)[:200]}); using eager double-backward products from now on", RuntimeWarning,
                      stacklevel=3)
        self.hvp_method, self._compiled = "double_backward", None

    def _grad_and_hvp_double_backward(self, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        theta = theta.requires_grad_(True)
        grad: Tensor | None = None
        hv: Tensor | None = None
        with torch.enable_grad():
            for piece in self.pieces:
                g_b, hv_b = graph_hvp(piece(theta), theta, v, retain_graph=False,
                                      batched=self.batches_products(theta.device))
                grad, hv = (g_b, hv_b) if grad is None or hv is None else (grad + g_b, hv + hv_b)
        assert grad is not None and hv is not None  # there is at least one piece
        return self._reduce(grad), self._reduce(hv)

    def _grad_and_hvp_forward(self, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        grad, hv = torch.zeros_like(theta), torch.zeros_like(v)
        for piece in self.pieces:
            gfun = torch.func.grad(piece)
            if v.ndim == 1:
                g_b, hv_b = torch.func.jvp(gfun, (theta,), (v,))  # type: ignore[misc]  # stubs: has_aux
            elif not self.batches_products(theta.device):
                outs = [torch.func.jvp(gfun, (theta,), (u,)) for u in v]
                g_b = outs[0][0] if outs else gfun(theta)
                hv_b = torch.stack([out[1] for out in outs]) if outs else torch.zeros_like(v)
            else:
                g_b, hv_b = torch.func.vmap(  # type: ignore[misc]
                    lambda u, gfun=gfun: torch.func.jvp(gfun, (theta,), (u,)),
                    out_dims=(None, 0), randomness="same")(v)  # type: ignore[arg-type]  # None: not batched
            grad, hv = grad + g_b, hv + hv_b
        return self._reduce(grad), self._reduce(hv)

    def grad_and_hessian_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(g, H g) at θ: one forward pass per micro-batch, graph kept for the second product."""
        op = self.hessian_operator(theta)
        g = op.gradient
        hg = op @ g
        op.release()
        return g, hg

    def third_derivative(self, theta: Tensor, v: Tensor) -> Tensor:
        """∇_θ (vᵀ H(θ) v) with v held fixed, i.e. the contraction D³E(θ)[v, v, ·], shape (D,).

        Needed by the third-order modified flow. Triple backward, real θ only; normalisation ops run as
        elementary ops (:func:`flows.objective.norms.exact_norms`: the fused kernels' third derivatives are wrong).
        """
        theta = self.check_theta(theta).detach()
        if theta.is_complex():
            raise TypeError("third_derivative supports real θ only")
        self.check_second_order(theta)
        self._check_third_order(theta)
        v = self._check_vectors(theta, v)
        leaf = theta.clone().requires_grad_(True)
        out = torch.zeros_like(theta)
        with torch.enable_grad(), exact_norms():
            for piece in self.pieces:
                value = piece(leaf)
                (g,) = torch.autograd.grad(value, leaf, create_graph=True)
                if not g.requires_grad:
                    continue
                (hv,) = torch.autograd.grad(g, leaf, grad_outputs=v, create_graph=True, allow_unused=True)
                if hv is None or not hv.requires_grad:
                    continue
                (t,) = torch.autograd.grad((hv * v).sum(), leaf, allow_unused=True)
                if t is not None:
                    out = out + t
        return self._reduce(out)

    def _check_third_order(self, theta: Tensor) -> None:
        """Refuse third derivatives where an op with a wrong third derivative stays on E's graph.

        Such an op survives :func:`flows.objective.norms.exact_norms` when called past the layer (e.g.
        ``torch.ops.aten.native_layer_norm`` directly); the error names the place. The graph is searched once, on the
        first third-order call.
        """
        if self._faulty_third_order is None:
            parts = self.module_parts
            if parts is not None and self.model is not None and self.layout is not None:
                found = graph_search(self.model, parts.loss_fn, parts.batches[0], self.layout, theta.detach(),
                                     parts.layers, faulty_third_order_nodes, mode=exact_norms())
            else:
                with torch.enable_grad(), exact_norms():
                    value = self.pieces[0](theta.detach().clone().requires_grad_(True))
                found = sorted({what for _, what in faulty_third_order_nodes([value.grad_fn], set())})
            self._faulty_third_order = found
        if self._faulty_third_order:
            raise ValueError(
                f"third derivatives of {self.name} would be silently wrong: {', '.join(self._faulty_third_order)} "
                "run a fused normalisation kernel whose third derivative is wrong, called in a way driftlab cannot "
                "reroute; call it as torch.nn.functional.layer_norm / batch_norm / instance_norm (or an nn layer), "
                "which driftlab decomposes into elementary ops for third derivatives")

    def check_second_order(self, theta: Tensor) -> None:
        """Refuse second-order products where double backward would be silently wrong.

        A custom ``autograd.Function`` whose backward is ``@once_differentiable`` does not make double backward
        fail: its second derivatives are dropped without an error. The graph of E at θ is searched once (the
        first time curvature is asked for) and every such place is named
        (:func:`flows.objective.modules.once_differentiable_layers`).
        """
        if self._first_order_only is None:
            leaf = theta.detach()
            parts = self.module_parts
            if parts is not None and self.model is not None and self.layout is not None:
                found = once_differentiable_layers(self.model, parts.loss_fn, parts.batches[0], self.layout,
                                                   leaf, parts.layers)
            else:
                with torch.enable_grad():
                    value = self.pieces[0](leaf.clone().requires_grad_(True))
                nodes = once_differentiable_nodes([value.grad_fn], set())
                found = sorted({f"Function {node._forward_cls.__name__}" for node in nodes})
            self._first_order_only = found
        if self.batched_products is None and not self._first_order_only:
            self.batched_products = self._batched_products_work(theta.detach())
        if self._first_order_only:
            raise ValueError(
                f"second derivatives of {self.name} would be silently wrong: "
                f"{', '.join(self._first_order_only)} run an autograd.Function whose backward is "
                "@once_differentiable, and double backward drops its second-order terms without an error; "
                "give that Function a differentiable backward to use curvature (HVPs, eigenpairs, PF, IGR, "
                "central flow), or keep to first-order tools (gradient_descent, integrate(flow='gf'))")

    def batches_products(self, device: torch.device) -> bool:
        """Whether a block of products on ``device`` runs as one batched backward, as ``batching`` says.

        Never where the probe of :meth:`_batched_products_work` found that batched double backward fails here.
        """
        if self.batched_products is False:
            return False
        return self.batching == "vmap" or (self.batching == "auto" and device.type != "cpu")

    def _batched_products_work(self, theta: Tensor) -> bool:
        """Whether one batched double backward (``is_grads_batched``) gives the same products as single ones.

        PyTorch's group norm breaks it ("The size of tensor a (2) must match the size of tensor b
        (4)"); where it fails or differs, every batched product of this objective loops over single products
        (same results, one backward each) and one info-level log line says so. Probed once, on ≤ 8 examples
        (a module) or on the first piece.
        """
        if theta.is_complex():
            return True
        leaf = theta.clone().requires_grad_(True)
        parts = self.module_parts
        with torch.enable_grad():
            value = parts.probe(leaf) if parts is not None else self.pieces[0](leaf)
            (g,) = torch.autograd.grad(value, leaf, create_graph=True)
            if not g.requires_grad:
                return True
            v = torch.randn(2, self.dim, generator=torch.Generator().manual_seed(0), dtype=leaf.dtype).to(leaf.device)
            single = torch.stack([vjp(g, leaf, row, True) for row in v])
            why = ""
            try:
                batched = vjp(g, leaf, v, True)
            except RuntimeError as err:
                why = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            else:
                scale = float(single.abs().max()) or 1.0
                if math.isfinite(scale) and not bool(torch.allclose(batched, single, rtol=1e-4, atol=1e-5 * scale)):
                    why = "batched and single products differ"
        if why:
            logging.getLogger("driftlab").info(
                "%s: batched double backward fails on this graph (%s, e.g. torch's group norm); batched Hessian "
                "products loop over single products (same results, one backward each)", self.name, why)
            return False
        return True

    def third_derivatives(self, theta: Tensor, u: Tensor) -> Tensor:
        """The bilinear third derivatives tᵢⱼ = ∇_θ(uᵢᵀ H(θ) uⱼ) = D³E(θ)[uᵢ, uⱼ, ·] for i ≤ j.

        The vectors uᵢ are held fixed: shape (k(k+1)/2, D) for ``u`` of shape (D, k) (columns, e.g. eigenvectors),
        pairs ordered (0,0), (0,1), …, (0,k−1), (1,1), … (:func:`flows.objective.autodiff.pair_indices`).

        One forward pass per micro-batch and three backward passes, two of them batched (over the k columns,
        then over the pairs): the term ½∇⟨H, Σ⟩ of the central flow with Σ = U X Uᵀ is Σᵢⱼ Xᵢⱼ tᵢⱼ / 2.
        Real θ only; normalisation ops run as elementary ops (:func:`flows.objective.norms.exact_norms`).
        """
        theta = self.check_theta(theta).detach()
        if theta.is_complex():
            raise TypeError("third_derivatives supports real θ only")
        self.check_second_order(theta)
        self._check_third_order(theta)
        if not isinstance(u, Tensor) or u.ndim not in (1, 2) or u.shape[0] != self.dim:
            raise ValueError(f"u must have shape ({self.dim},) or ({self.dim}, k), got "
                             f"{tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
        rows = u.reshape(self.dim, -1).T.to(device=theta.device, dtype=theta.dtype).contiguous()
        leaf = theta.clone().requires_grad_(True)
        out: Tensor | None = None
        with torch.enable_grad(), exact_norms():
            if self._compiled is not None and len(rows) > 0:
                try:
                    return self._reduce(self._compiled.third_derivatives(theta, rows))
                except Exception as err:  # noqa: BLE001 - any tracing or compiler failure means: run eagerly
                    self._compiled_failed(err)
            for piece in self.pieces:
                t = bilinear_third_derivatives(piece(leaf), leaf, rows, batched=self.batches_products(leaf.device))
                out = t if out is None else out + t
        assert out is not None  # at least one piece
        return self._reduce(out)

    def hessian(self, theta: Tensor, *, chunk: int = 256) -> Tensor:
        """Dense H(θ), shape (D, D), from HVPs with the identity (small D only)."""
        theta = self.check_theta(theta)
        if self.dim > 20_000:
            raise ValueError(f"dense hessian of a {self.dim}-parameter objective is too large; "
                             "use hvp or hessian_operator instead")
        eye = torch.eye(self.dim, dtype=theta.dtype, device=theta.device)
        op = self.hessian_operator(theta)
        rows = [op @ eye[i:i + chunk].T for i in range(0, self.dim, chunk)]
        h = torch.cat(rows, dim=1)
        return 0.5 * (h + h.T)  # exact symmetry; the two triangles agree to round-off

    def hessian_operator(self, theta: Tensor):
        """H(θ) as a matrix-like operator (``H @ v``, ``to_scipy()``) at a fixed θ.

        The gradient graph is built once and reused by every product, which is
        the cheap way to apply H many times at one point (eigensolvers).
        """
        return HessianOperator(self, self.check_theta(theta))

    def __repr__(self) -> str:
        return f"Objective(name={self.name!r}, dim={self.dim}, pieces={len(self.pieces)})"

    # ------------------------------------------------------------------ modules
    def assign_to_module(self, theta: Tensor) -> None:
        """Copy θ into the parameters of the module this objective was built from."""
        model = getattr(self, "model", None)
        if model is None:
            raise ValueError("assign_to_module needs an objective built by Objective.from_module")
        layout = self.layout or ParameterLayout.of(model)
        layout.write([p for p in model.parameters() if p.requires_grad], self.check_theta(theta).detach())


def _check_module_arguments(model: Any, loss_fn: Any, loss_reduction: str, mode: str,
                            stochastic_seed: int | None) -> None:
    """from_module's arguments, each checked with an error naming it and its valid values."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if loss_reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if stochastic_seed is not None and (isinstance(stochastic_seed, bool) or not isinstance(stochastic_seed, int)):
        raise ValueError(f"stochastic_seed must be None or an int, got {stochastic_seed!r}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    complex_params = [n for n, p in params if p.is_complex()]
    if complex_params:
        raise ValueError(f"model has complex parameters ({', '.join(complex_params[:3])}): driftlab's θ is "
                         "real and a real loss of complex parameters has no holomorphic gradient; "
                         "parametrize them by their real and imaginary parts (torch.view_as_real)")
