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

import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor

HVP_METHODS = ("double_backward", "forward_over_reverse")
MODES = ("current", "eval", "train")
Piece = Callable[[Tensor], Tensor]


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
            backward, with a warning, where torch.func fails on a loss).
        name: a label for plots and saved results.
        reduce: applied to every accumulated loss/grad/HVP (identity on one
            process; a sum over ranks in data-parallel runs).
        compile: ``torch.compile`` the loss pieces used by ``loss`` and
            ``loss_and_grad`` (``True`` for the default backend, or a backend
            name). HVPs keep the eager pieces (compiled graphs do not support
            double backward). If compiling or running a compiled piece fails,
            a warning is issued once and the eager pieces are used from then on.
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
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if len(pieces) == 0:
            raise ValueError("an Objective needs at least one loss piece (got an empty data set?)")
        if hvp_method not in HVP_METHODS:
            raise ValueError(f"hvp_method must be one of {HVP_METHODS}, got {hvp_method!r}")
        self.pieces = list(pieces)
        self.dim = dim
        self.hvp_method = hvp_method
        self.name = name
        self._reduce = reduce
        self._for_warned = False
        if compile not in (False, True) and not isinstance(compile, str):
            raise ValueError(f"compile must be False, True or a torch.compile backend name, got {compile!r}")
        self.compile = compile
        self._fast_pieces: list[Piece] | None = None
        # set by from_module: the layout of θ over the named parameters, and the module itself
        self.parameter_names: list[str] = []
        self.parameter_shapes: list[torch.Size] = []
        self.model: torch.nn.Module | None = None
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
    ) -> Objective:
        """E(θ) = fn(θ) for an analytic ``fn: (D,) tensor -> 0-d tensor``.

        ``fn`` must be written with torch operations (so that autograd, and
        analytic continuation to complex θ, work). Its output is checked to be
        a scalar right away: at θ0, or without θ0 at zeros in the default
        dtype and, if ``fn`` fails there (e.g. it closes over float64
        constants), in the other real precision.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if theta0 is not None and not isinstance(theta0, Tensor):
            theta0 = torch.as_tensor(theta0, dtype=torch.get_default_dtype())
        obj = cls([fn], dim, theta0=theta0, name=name or str(getattr(fn, "__name__", "function")),
                  hvp_method=hvp_method)
        if obj.theta0 is not None:
            with torch.no_grad():
                _check_scalar(fn(obj.theta0), "fn")
            return obj
        # no θ0: probe at zeros in the default dtype, then in the other real precision, so that a function
        # closed over float64 (or float32) constants is accepted; report the first failure if none works
        errors: list[Exception] = []
        for dtype in dict.fromkeys((torch.get_default_dtype(), torch.float64, torch.float32)):
            try:
                with torch.no_grad():
                    _check_scalar(fn(torch.zeros(dim, dtype=dtype)), "fn")
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
            stochastic_seed: the objective is a deterministic function of θ.
                Dropout layers (``nn.Dropout*``, ``nn.AlphaDropout``…) in train
                mode are switched off during evaluations (a warning says so)
                unless ``stochastic_seed`` is an int: then every evaluation
                runs under a fixed random state (seed + micro-batch index, the
                global RNG left untouched), i.e. one fixed dropout mask per
                micro-batch. A loss that still differs between two identical
                evaluations is refused at construction.

        BatchNorm (and other layers with running statistics): running
        statistics are never read in train mode and never written in any
        mode; the module's buffers stay as they are. In train mode each
        micro-batch is normalised by its own statistics: with ``batch_size``
        None (the default, one micro-batch) these are the full-batch
        statistics; with smaller micro-batches the loss depends on
        ``batch_size`` ("ghost" batch norm; a warning says so), and in
        data-parallel runs each rank normalises by its shard's statistics.

        Parameters must be real: a complex parameter is refused (a real loss of
        complex parameters has no holomorphic gradient; split it into real and
        imaginary parts). Non-finite inputs or targets are refused, naming the
        micro-batch.
            total_size: N, when ``data`` is one shard of a larger data set.
            process_group: data-parallel full batch with ``torch.distributed``:
                each rank passes its own shard as ``data``; N is the sum of the
                shard sizes, and loss, gradient, HVPs and third derivatives are
                summed over the group with ``all_reduce``, so every rank sees
                the full-batch numbers. ``"auto"`` (default) uses the default
                group when ``torch.distributed`` is initialised, ``None`` never
                reduces. Shards must give the same D and example shapes on every
                rank (checked here, with an error on every rank).
        """
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
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in model.named_parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters (none with requires_grad=True)")
        complex_params = [n for n, p in zip(names, params) if p.is_complex()]
        if complex_params:
            raise ValueError(f"model has complex parameters ({', '.join(complex_params[:3])}): driftlab's θ is "
                             "real and a real loss of complex parameters has no holomorphic gradient; "
                             "parametrize them by their real and imaginary parts (torch.view_as_real)")
        batches = _split_batches(data, batch_size)
        _check_finite(batches)
        n_total = sum(len(x) for x, _ in batches)
        group = _resolve_group(process_group)
        if group is not None:
            if total_size is not None or reduce is not _identity_reduce:
                raise ValueError("process_group sums the shards itself: do not also pass total_size or reduce")
            n_total = _check_shards(group, params, batches, n_total)
            reduce = _all_reduce_sum(group)
        if total_size is not None:
            n_total = int(total_size)
        shapes = [p.shape for p in params]
        sizes = [p.numel() for p in params]
        frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
        buffers = dict(model.named_buffers())
        cache: dict[tuple, list[tuple[Tensor, Tensor]]] = {}

        def on(theta: Tensor) -> list[tuple[Tensor, Tensor]]:
            # data follows θ's device, and its dtype when the data are floating point
            key = (theta.device, theta.dtype)
            if key not in cache:
                real = theta.real.dtype if theta.is_complex() else theta.dtype
                cache[key] = [(_to(x, theta.device, real), _to(y, theta.device, real))
                              for x, y in batches]
            return cache[key]

        def unflatten(theta: Tensor) -> dict[str, Tensor]:
            out = dict(zip(names, (c.view(s) for c, s in zip(torch.split(theta, sizes), shapes))))
            out.update(frozen)
            out.update(buffers)
            return out

        layers = _StatefulLayers(model, mode, stochastic_seed)

        def make_piece(i: int, n_b: int) -> Piece:
            w = n_b / n_total if loss_reduction == "mean" else 1.0 / n_total

            def piece(theta: Tensor) -> Tensor:
                x, y = on(theta)[i]
                with layers.evaluation(theta.device, i) as no_stats:
                    out = torch.func.functional_call(model, {**unflatten(theta), **no_stats}, (x,))
                return w * _check_scalar(loss_fn(out, y), "loss_fn")

            return piece

        pieces = [make_piece(i, len(x)) for i, (x, _) in enumerate(batches)]
        theta0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()
        if group is not None:  # one starting point for all ranks, as DistributedDataParallel does
            import torch.distributed as dist

            dist.broadcast(theta0, src=dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0,
                           group=group)
        obj = cls(pieces, theta0.numel(), theta0=theta0, hvp_method=hvp_method,
                  name=name or type(model).__name__, reduce=reduce, compile=compile)
        obj.parameter_names, obj.parameter_shapes = names, shapes
        obj.model = model
        layers.warn_once(len(batches))
        x0, y0 = batches[0]
        with torch.no_grad():  # fail early on a non-scalar or random loss, on a slice of the first micro-batch
            real, n_probe = theta0.dtype, min(len(x0), 8)
            x0, y0 = _to(x0[:n_probe], theta0.device, real), _to(y0[:n_probe], theta0.device, real)
            values = []
            with torch.random.fork_rng(devices=[theta0.device] if theta0.device.type == "cuda" else []):
                for _ in range(2):
                    with layers.evaluation(theta0.device, 0) as no_stats:
                        out = torch.func.functional_call(model, {**unflatten(theta0), **no_stats}, (x0,))
                    values.append(_check_scalar(loss_fn(out, y0), "loss_fn"))
            if not torch.equal(values[0], values[1]) and not bool(values[0].isnan()):
                raise ValueError("the loss of this model is random (two identical evaluations gave "
                                 f"{float(values[0]):.6g} and {float(values[1]):.6g}): driftlab needs a deterministic "
                                 "E(θ); random layers other than nn.Dropout* must be switched off, or pass "
                                 "stochastic_seed=N to evaluate under a fixed random state")
        return obj

    # ------------------------------------------------------------------ checks
    def check_theta(self, theta: Tensor, argname: str = "theta") -> Tensor:
        """Validate θ: a 1-D floating or complex tensor of length D."""
        if not isinstance(theta, Tensor):
            raise TypeError(f"{argname} must be a torch.Tensor, got {type(theta).__name__}")
        if not (theta.is_floating_point() or theta.is_complex()):
            raise TypeError(f"{argname} must be a floating point or complex tensor, got dtype {theta.dtype}")
        if theta.ndim != 1 or theta.shape[0] != self.dim:
            raise ValueError(f"{argname} must have shape ({self.dim},), got {tuple(theta.shape)}")
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
        """E(θ), a 0-d tensor on θ's device."""
        theta = self.check_theta(theta).detach()

        def compute(pieces: list[Piece]) -> Tensor:
            with torch.no_grad():
                return torch.stack([piece(theta) for piece in pieces]).sum()

        return self._reduce(self._with_fallback(compute))

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(E(θ), ∇E(θ)) from one forward and one backward pass per micro-batch."""
        theta = self.check_theta(theta).detach().requires_grad_(True)

        def compute(pieces: list[Piece]) -> tuple[Tensor, Tensor]:
            loss = torch.zeros((), dtype=theta.dtype, device=theta.device)
            grad = torch.zeros_like(theta)
            with torch.enable_grad():
                for piece in pieces:
                    value = piece(theta)
                    (g,) = torch.autograd.grad(value, theta, grad_outputs=torch.ones_like(value))
                    loss, grad = loss + value.detach(), grad + g
            return loss, grad

        loss, grad = self._with_fallback(compute)
        if theta.is_complex():
            grad = grad.conj()
        return self._reduce(loss), self._reduce(grad)

    def grad(self, theta: Tensor) -> Tensor:
        """g = ∇E(θ), shape (D,)."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """H(θ) v for v of shape (D,) or a batch (m, D) → same shape."""
        return self.grad_and_hvp(theta, v)[1]

    def grad_and_hvp(self, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(g, H v) at θ, sharing the forward/backward pass between them."""
        theta = self.check_theta(theta).detach()
        v = self._check_vectors(theta, v)
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

    def _grad_and_hvp_double_backward(self, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        theta = theta.requires_grad_(True)
        grad, hv = torch.zeros_like(theta), torch.zeros_like(v)
        with torch.enable_grad():
            for piece in self.pieces:
                g_b, hv_b = _graph_hvp(piece(theta), theta, v, retain_graph=False)
                grad, hv = grad + g_b, hv + hv_b
        return self._reduce(grad), self._reduce(hv)

    def _grad_and_hvp_forward(self, theta: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        grad, hv = torch.zeros_like(theta), torch.zeros_like(v)
        for piece in self.pieces:
            gfun = torch.func.grad(piece)
            if v.ndim == 1:
                g_b, hv_b = torch.func.jvp(gfun, (theta,), (v,))  # type: ignore[misc]  # stubs: has_aux
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

        Needed by the third-order modified flow. Triple backward, real θ only.
        """
        theta = self.check_theta(theta).detach()
        if theta.is_complex():
            raise TypeError("third_derivative supports real θ only")
        v = self._check_vectors(theta, v)
        leaf = theta.clone().requires_grad_(True)
        out = torch.zeros_like(theta)
        with torch.enable_grad():
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
        from .operators import HessianOperator

        return HessianOperator(self, self.check_theta(theta))

    def __repr__(self) -> str:
        return f"Objective(name={self.name!r}, dim={self.dim}, pieces={len(self.pieces)})"

    # ------------------------------------------------------------------ modules
    def assign_to_module(self, theta: Tensor) -> None:
        """Copy θ into the parameters of the module this objective was built from."""
        model = getattr(self, "model", None)
        if model is None:
            raise ValueError("assign_to_module needs an objective built by Objective.from_module")
        theta = self.check_theta(theta).detach()
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            for p, chunk in zip(params, torch.split(theta, [p.numel() for p in params])):
                p.copy_(chunk.view_as(p))


def _graph_hvp(value: Tensor, theta: Tensor, v: Tensor, *, retain_graph: bool) -> tuple[Tensor, Tensor]:
    """(∇value, ∇²value · v) by double backward; handles complex (holomorphic) θ."""
    (g,) = torch.autograd.grad(value, theta, grad_outputs=torch.ones_like(value), create_graph=True)
    if theta.is_complex():
        g = g.conj()  # holomorphic gradient; its vJp is conjugated again below
        hv = _vjp(g, theta, v.conj(), retain_graph).conj()
    else:
        hv = _vjp(g, theta, v, retain_graph)
    return g.detach(), hv


def _vjp(g: Tensor, theta: Tensor, v: Tensor, retain_graph: bool) -> Tensor:
    if not g.requires_grad:  # E is affine in θ: H = 0
        return torch.zeros_like(v)
    if v.ndim == 1:
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=retain_graph,
                                    allow_unused=True)
    else:
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=retain_graph,
                                    is_grads_batched=True, allow_unused=True)
    return torch.zeros_like(v) if hv is None else hv


def _resolve_group(process_group: Any):
    """The process group to reduce over, or None (one process)."""
    import torch.distributed as dist

    if process_group is None:
        return None
    if isinstance(process_group, str):
        if process_group != "auto":
            raise ValueError(f"process_group must be 'auto', None or a ProcessGroup, got {process_group!r}")
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        return dist.group.WORLD
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("process_group was given but torch.distributed is not initialised")
    return process_group


def _all_reduce_sum(group) -> Callable[[Tensor], Tensor]:
    import torch.distributed as dist

    def reduce(t: Tensor) -> Tensor:
        out = torch.view_as_real(t).clone() if t.is_complex() else t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return torch.view_as_complex(out) if t.is_complex() else out

    return reduce


_DTYPE_CODES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)


def _check_shards(group, params: Sequence[Tensor], batches: list[tuple[Tensor, Tensor]], n_local: int) -> int:
    """Same D and example shapes on every rank (else a ValueError on every rank); returns N = Σ shard sizes."""
    import torch.distributed as dist

    x0, y0 = batches[0]
    device = params[0].device  # nccl reduces CUDA tensors only; gloo takes CPU ones
    codes = {dtype: i for i, dtype in enumerate(_DTYPE_CODES)}
    sig = torch.tensor([sum(p.numel() for p in params), x0[0].numel(), y0[0].numel() if y0.ndim > 1 else 1,
                        codes.get(params[0].dtype, -1), codes.get(x0.dtype, -1)],
                       dtype=torch.float64, device=device)
    lo, hi = sig.clone(), sig.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(lo, hi):
        what = [n for n, a, b in zip(("parameter count D", "input size per example", "target size per example",
                                      "parameter dtype", "input dtype"), lo.tolist(), hi.tolist()) if a != b]
        raise ValueError(f"data-parallel shards disagree across ranks on {', '.join(what)} "
                         f"(min {lo.tolist()}, max {hi.tolist()} for [D, input, target, parameter dtype, input "
                         f"dtype], dtypes coded {', '.join(f'{i}={d}' for i, d in enumerate(_DTYPE_CODES))}) "
                         f"on rank {dist.get_rank(group)}")
    n = torch.tensor([float(n_local)], dtype=torch.float64, device=device)
    dist.all_reduce(n, op=dist.ReduceOp.SUM, group=group)
    return int(n.item())


_DROPOUT = (torch.nn.modules.dropout._DropoutNd,)
_RUNNING_STATS = (torch.nn.modules.batchnorm._NormBase,)


class _StatefulLayers:
    """Train/eval modes, dropout and running statistics of a module during one evaluation.

    ``evaluation(device, index)`` is a context manager that sets the modes
    (per ``mode``; dropout off unless a seed is given; every submodule's own
    flag restored afterwards) and yields the buffers to substitute: None for
    the running statistics of normalisation layers in train mode, so that
    their forward pass uses batch statistics and writes nothing.
    """

    def __init__(self, model: torch.nn.Module, mode: str, seed: int | None) -> None:
        self.model, self.mode, self.seed = model, mode, seed
        self.modules = list(model.named_modules())
        self.dropouts = [m for _, m in self.modules if isinstance(m, _DROPOUT)]
        self.norms = [(name, m) for name, m in self.modules
                      if isinstance(m, _RUNNING_STATS) and m.track_running_stats]

    def _training(self, module: torch.nn.Module) -> bool:
        return module.training if self.mode == "current" else self.mode == "train"

    def warn_once(self, n_batches: int) -> None:
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


def _check_finite(batches: list[tuple[Tensor, Tensor]]) -> None:
    for i, (x, y) in enumerate(batches):
        for what, t in (("inputs", x), ("targets", y)):
            if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"data: the {what} of micro-batch {i} hold {bad} NaN/Inf entries; "
                                 "clean the data before building the objective")


def _check_scalar(value: Tensor, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, got {type(value).__name__}")
    if value.numel() != 1 or value.ndim > 1:
        raise ValueError(f"{what} must return a scalar loss, got shape {tuple(value.shape)}")
    return value.reshape(())


def _to(t: Tensor, device: torch.device, real_dtype: torch.dtype) -> Tensor:
    if t.is_floating_point():
        return t.to(device=device, dtype=real_dtype)
    return t.to(device=device)


def _split_batches(data, batch_size: int | None) -> list[tuple[Tensor, Tensor]]:
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
