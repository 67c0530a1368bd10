"""Cast frozen Linear/Conv weights to the autocast dtype once per optimize call, not every step.

Autocast caches its weight casts only for leaf tensors that require grad (model training). The
engine's models are frozen, so under bf16 autocast every Linear and Conv weight and bias was cast
again in every forward: 316 of the ~1,900 kernel-launching operations of one MAE-Large +
ResNet-50 step (counted with a TorchDispatchMode), and a read of all fp32 weights per step. A GPU
step here is bound by kernel launches (benchmarks/README.md), so each launch saved is time saved.

Inside `weights_in_autocast_dtype(...)` those parameters are swapped for copies already in the
autocast dtype; autocast then has nothing to cast, and the kernels get the same bf16 values they
got before (the cast is the same rounding, done once), so the step is bit for bit the same
(tested). Only Linear and Conv layers are touched: autocast casts all their float arguments to the
lower precision anyway; LayerNorm, BatchNorm and everything autocast runs in fp32 keep their fp32
parameters. The originals are put back on exit, also after an exception or a Cancel.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

CAST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@contextlib.contextmanager
def weights_in_autocast_dtype(modules, dtype: torch.dtype | None):
    """Swap the fp32, frozen weights and biases of every Linear/Conv in `modules` for `dtype`
    copies for the duration of the block; a no-op when `dtype` is None (autocast off)."""
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        if dtype is not None:
            with torch.inference_mode(False), torch.no_grad():
                for root in modules:
                    for module in root.modules():
                        if not isinstance(module, CAST_LAYERS):
                            continue
                        for name in ("weight", "bias"):
                            param = module._parameters.get(name)
                            if param is None or param.dtype != torch.float32 or param.requires_grad:
                                continue
                            module._parameters[name] = nn.Parameter(param.to(dtype), requires_grad=False)
                            swapped.append((module, name, param))
        yield
    finally:
        for module, name, param in reversed(swapped):
            module._parameters[name] = param
