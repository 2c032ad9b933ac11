"""Exact third derivatives through normalisation ops.

PyTorch's fused normalisation kernels have correct first and second derivatives but a wrong third one (the
derivative of their double-backward formula). Measured with torch 2.13 in float64, w·∇(vᵀHv) against central
differences of HVPs on a tanh read-out with the op's input depending on θ (``tests/flows/objective/test_norms.py`` keeps
the table):

=========================================  ==========  ================================
op                                          rel. error  autograd node
=========================================  ==========  ================================
``layer_norm`` (nn.LayerNorm, F., torch.)   2e-2 – 0.45 ``NativeLayerNormBackward0``
``batch_norm``, batch statistics            0.20        ``NativeBatchNormBackward0``
``instance_norm`` (through batch_norm)      1e-2        ``NativeBatchNormBackward0``
``batch_norm``, running statistics          1e-7        (affine in the input: exact)
``group_norm``                              5e-7        exact
``rms_norm``                                1e-7        exact (decomposed by torch)
``scaled_dot_product_attention`` (math)     6e-6        exact (the difference is the
                                                        central difference's own error)
=========================================  ==========  ================================

:func:`exact_norms` is a ``TorchFunctionMode`` that routes every call of the faulty ops — the modules, the
functional forms (a nanoGPT-style ``LayerNorm`` class calling ``F.layer_norm``) and the ``torch.`` forms — to
the same functions written in elementary ops (:func:`layer_norm`, :func:`batch_norm`, :func:`instance_norm`,
equal to the kernels to 1e-12), whose derivatives are right to any order. :class:`~flows.objective.Objective`
computes third derivatives under it, so no model needs rewriting. What the mode cannot see (an op called as
``torch.ops.aten.native_layer_norm``) is found in the autograd graph by :func:`faulty_third_order_nodes` and
refused, naming the layer.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .autodiff import graph_nodes

# autograd nodes whose third derivative is wrong; the value says when (None: always, else a saved flag)
FAULTY_NODES: dict[str, str | None] = {
    "NativeLayerNormBackward0": None,
    "NativeBatchNormBackward0": "_saved_training",
    "CudnnBatchNormBackward0": "_saved_training",
    "MiopenBatchNormBackward0": "_saved_training",
}


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """(x − mean)/√(var + eps)·weight + bias over the last ``len(normalized_shape)`` dims (biased variance)."""
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    mean = input.mean(dim=dims, keepdim=True)
    var = ((input - mean) ** 2).mean(dim=dims, keepdim=True)
    out = (input - mean) / torch.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    return out + bias if bias is not None else out


def _channel_affine(out: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    shape = (1, -1) + (1,) * (out.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    return out + bias.reshape(shape) if bias is not None else out


def _update_running(running_mean: Tensor | None, running_var: Tensor | None, mean: Tensor, var: Tensor,
                    count: int, momentum: float | None) -> None:
    """The kernels' in-place running-statistics update (unbiased variance), without a graph."""
    if running_mean is None or running_var is None:
        return
    m = 0.1 if momentum is None else momentum
    with torch.no_grad():
        running_mean.mul_(1 - m).add_(mean.detach().reshape(running_mean.shape), alpha=m)
        unbiased = var.detach().reshape(running_var.shape) * (count / max(count - 1, 1))
        running_var.mul_(1 - m).add_(unbiased, alpha=m)


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float | None = 0.1, eps: float = 1e-5) -> Tensor:
    """``F.batch_norm`` in elementary ops.

    Batch statistics over (N, spatial) per channel when ``training`` (running statistics updated in place as the kernel
    does), the running statistics otherwise.
    """
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed when training=False")
        shape = (1, -1) + (1,) * (input.ndim - 2)
        out = (input - running_mean.reshape(shape)) / torch.sqrt(running_var.reshape(shape) + eps)
        return _channel_affine(out, weight, bias)
    dims = (0,) + tuple(range(2, input.ndim))
    mean = input.mean(dim=dims, keepdim=True)
    var = ((input - mean) ** 2).mean(dim=dims, keepdim=True)
    _update_running(running_mean, running_var, mean, var, input.numel() // input.shape[1], momentum)
    return _channel_affine((input - mean) / torch.sqrt(var + eps), weight, bias)


def instance_norm(input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
                  weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float | None = 0.1, eps: float = 1e-5) -> Tensor:
    """``F.instance_norm`` in elementary ops: statistics over the spatial dims of each (sample, channel)."""
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    dims = tuple(range(2, input.ndim))
    mean = input.mean(dim=dims, keepdim=True)
    var = ((input - mean) ** 2).mean(dim=dims, keepdim=True)
    if running_mean is not None and running_var is not None:
        _update_running(running_mean, running_var, mean.mean(0), var.mean(0),
                        input[0, 0].numel(), momentum)
    return _channel_affine((input - mean) / torch.sqrt(var + eps), weight, bias)


def _bind(names: Sequence[str], defaults: dict[str, Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _route_layer_norm(names: Sequence[str]) -> Callable[..., Tensor]:
    def route(*args: Any, **kwargs: Any) -> Tensor:
        b = _bind(names, {"weight": None, "bias": None, "eps": 1e-5}, args, kwargs)
        return layer_norm(b["input"], b["normalized_shape"], b["weight"], b["bias"], b["eps"])
    return route


def _route_batch_norm(names: Sequence[str]) -> Callable[..., Tensor]:
    def route(*args: Any, **kwargs: Any) -> Tensor:
        b = _bind(names, {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5},
                  args, kwargs)
        return batch_norm(b["input"], b["running_mean"], b["running_var"], b["weight"], b["bias"],
                          bool(b["training"]), b["momentum"], b["eps"])
    return route


def _route_instance_norm(names: Sequence[str]) -> Callable[..., Tensor]:
    def route(*args: Any, **kwargs: Any) -> Tensor:
        b = _bind(names, {"running_mean": None, "running_var": None, "weight": None, "bias": None,
                          "use_input_stats": True, "momentum": 0.1, "eps": 1e-5}, args, kwargs)
        return instance_norm(b["input"], b["running_mean"], b["running_var"], b["weight"], b["bias"],
                             bool(b["use_input_stats"]), b["momentum"], b["eps"])
    return route


_ROUTES: dict[Any, Callable[..., Tensor]] = {
    F.layer_norm: _route_layer_norm(("input", "normalized_shape", "weight", "bias", "eps")),
    torch.layer_norm: _route_layer_norm(("input", "normalized_shape", "weight", "bias", "eps", "cudnn_enable")),
    F.batch_norm: _route_batch_norm(("input", "running_mean", "running_var", "weight", "bias", "training",
                                     "momentum", "eps")),
    torch.batch_norm: _route_batch_norm(("input", "weight", "bias", "running_mean", "running_var", "training",
                                         "momentum", "eps", "cudnn_enabled")),
    F.instance_norm: _route_instance_norm(("input", "running_mean", "running_var", "weight", "bias",
                                           "use_input_stats", "momentum", "eps")),
    torch.instance_norm: _route_instance_norm(("input", "weight", "bias", "running_mean", "running_var",
                                               "use_input_stats", "momentum", "eps", "cudnn_enabled")),
}


class ExactNorms(TorchFunctionMode):
    """A ``TorchFunctionMode`` under which normalisation runs as elementary ops, right to every order.

    Layer, batch and instance normalisation (modules, ``F.`` and ``torch.`` forms) are rerouted
    (:mod:`flows.objective.norms`); other calls pass through unchanged.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        route = _ROUTES.get(func)
        if route is not None:
            return route(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def exact_norms() -> ExactNorms:
    """A context in which normalisation ops run decomposed (an :class:`ExactNorms` mode)."""
    return ExactNorms()


def faulty_third_order_nodes(roots: list[Any], stop: set[Any]) -> list[tuple[Any, str]]:
    """The autograd nodes reachable from ``roots`` (before ``stop``) whose third derivative is wrong.

    Each as (node, name), from :data:`FAULTY_NODES` (batch norm only with batch statistics).
    """
    hits = []
    for node in graph_nodes(roots, stop):
        name = type(node).__name__
        if name in FAULTY_NODES:
            flag = FAULTY_NODES[name]
            if flag is None or bool(getattr(node, flag, True)):
                hits.append((node, name))
    return hits


class PlainLayerNorm(torch.nn.Module):
    """``nn.LayerNorm`` written with elementary ops (:func:`layer_norm`).

    Same parameters and names as the layer it replaces, so θ's layout is unchanged.
    """

    def __init__(self, layer: torch.nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape, self.eps = tuple(layer.normalized_shape), layer.eps
        self.weight, self.bias = layer.weight, layer.bias

    def forward(self, x: Tensor) -> Tensor:
        """Layer norm of ``x`` in elementary ops."""
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class PlainBatchNorm(torch.nn.Module):
    """``nn.BatchNorm1d/2d/3d`` and ``nn.InstanceNorm1d/2d/3d`` written with elementary ops.

    Through :func:`batch_norm` and :func:`instance_norm`: batch (or instance) statistics in train mode or when the
    running statistics are substituted by None, as driftlab does; the running statistics otherwise. Never updates
    them. Same parameter and buffer names as the original.
    """

    def __init__(self, layer: torch.nn.modules.batchnorm._NormBase) -> None:
        super().__init__()
        self.eps = layer.eps
        self.instance = isinstance(layer, torch.nn.modules.instancenorm._InstanceNorm)
        self.track = layer.track_running_stats
        self.weight, self.bias = layer.weight, layer.bias
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.register_buffer("running_mean", layer.running_mean)
        self.register_buffer("running_var", layer.running_var)
        self.register_buffer("num_batches_tracked", layer.num_batches_tracked)
        self.training = layer.training

    def forward(self, x: Tensor) -> Tensor:
        """Batch or instance norm of ``x`` in elementary ops (running statistics as the module keeps them)."""
        batch_stats = self.training or self.running_mean is None or self.running_var is None
        if self.instance and (batch_stats or not self.track):
            return instance_norm(x, None, None, self.weight, self.bias, True, eps=self.eps)
        if batch_stats:
            return batch_norm(x, None, None, self.weight, self.bias, True, eps=self.eps)
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, eps=self.eps)


def decomposed_norms(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` with every normalisation layer written in elementary ops.

    ``nn.LayerNorm``, ``nn.BatchNorm*d`` and ``nn.InstanceNorm*d`` are replaced by
    :class:`PlainLayerNorm`/:class:`PlainBatchNorm` (same parameters, names and modes; the same function, tested
    to 1e-12). Not needed for driftlab's own third derivatives (they run under :func:`exact_norms`); useful to
    differentiate a model to third order elsewhere. The original is untouched.
    """
    clone = copy.deepcopy(model)
    for _, module in list(clone.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.LayerNorm):
                setattr(module, child_name, PlainLayerNorm(child))
            elif isinstance(child, torch.nn.modules.batchnorm._NormBase):
                setattr(module, child_name, PlainBatchNorm(child))
    return clone
