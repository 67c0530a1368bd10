"""fp32 linear layers on the CPU through oneDNN rather than the BLAS that `F.linear` calls.

PyTorch's CPU builds send fp32 `F.linear` (addmm / mm) to MKL. On AMD Zen CPUs MKL takes its
AVX2 code path: on 2 Zen 5 cores the MAE-Large shapes ran at 160-220 GFLOP/s, while oneDNN's
AVX-512 kernels (which PyTorch already ships for its convolutions) ran the same products at
400-500 GFLOP/s, forward and backward (benchmarks/README.md). In a CaG step the MAE's linear
layers are most of the work, so this is most of the CPU speed-up.

`cpu_linear_mode()` routes `F.linear` calls made inside it (nn.Linear, attention projections,
open_clip's MultiheadAttention) to `torch.ops.mkldnn._linear_pointwise` when it is safe to:
fp32 CPU tensors, autocast off, frozen weight and bias (the engine only needs the gradient with
respect to the input, which is one more product through the transposed weight, taken as a view:
no copy). Anything else -- CUDA, bf16, weights that train, a torch without the op -- goes to
`F.linear` unchanged. The result is the same product summed in another order: fp32 rounding,
relative differences ~1e-6 (tested against `F.linear`, and the benchmark checks whole steps).

The op is private to PyTorch (its inductor backend uses it), so it is checked once against
`F.linear` before first use and never used if it is missing or disagrees. Set
CAG_ONEDNN_LINEAR=0 to turn the route off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)

ENV_SWITCH = "CAG_ONEDNN_LINEAR"


def _op():
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return getattr(mkldnn, "_linear_pointwise", None) if mkldnn is not None else None


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias through oneDNN (weight [out, in], any strides)."""
    return _op()(x, weight, bias, "none", [], "")


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """The op exists and agrees with F.linear, forward and backward, on a small product."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _op() is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 5, 48, generator=gen)
        w = torch.randn(40, 48, generator=gen)
        b = torch.randn(40, generator=gen)
        g = torch.randn(2, 5, 40, generator=gen)
        with torch.inference_mode(False), torch.no_grad():
            ok = torch.allclose(_product(x, w, b), F.linear(x, w, b), rtol=1e-4, atol=1e-4)
            ok = ok and torch.allclose(_product(g, w.t(), None), g @ w, rtol=1e-4, atol=1e-4)
    except Exception as exc:  # an op whose signature changed: fall back, say so once
        log.info("oneDNN linear unavailable (%s: %s); using F.linear", type(exc).__name__, exc)
        return False
    if not ok:
        log.warning("oneDNN linear disagrees with F.linear on this machine; using F.linear")
    return bool(ok)


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with a frozen W, b; backward gives the input's gradient only."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return _product(grad.contiguous(), weight.t(), None), None, None


def _eligible(x, weight, bias) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() >= 2
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and not weight.requires_grad
        and (bias is None or (bias.dtype == torch.float32 and not bias.requires_grad))
        and not torch.is_autocast_enabled("cpu")
        and x.numel() > 0
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN where eligible (see the module docstring)."""
    if available() and _eligible(x, weight, bias):
        if x.requires_grad and torch.is_grad_enabled():
            return _OneDNNLinear.apply(x, weight, bias)
        return _product(x, weight, bias)
    return F.linear(x, weight, bias)


class _LinearRoute(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            return linear(*args, **kwargs)
        return func(*args, **kwargs)


def cpu_linear_mode(device: torch.device | str | None = "cpu"):
    """Context in which F.linear on the CPU goes through oneDNN; a no-op for other devices, when
    the op is unavailable, or when CAG_ONEDNN_LINEAR=0."""
    if torch.device(device or "cpu").type != "cpu" or not available():
        return contextlib.nullcontext()
    return _LinearRoute()
