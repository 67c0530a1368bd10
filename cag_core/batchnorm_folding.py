"""A copy of a frozen conv net with each eval-mode BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, so `bn(conv(x))` is one convolution with
scaled weights and a bias. Folding removes a full read and write of every activation map, forward
and backward: on 2 CPU cores the BatchNorm passes were 24 % of an EfficientNet-Lite0 step and 7 %
of a ResNet-50 one. The result is the same function up to fp32 rounding (~1e-6 relative).

Which convolution feeds which BatchNorm is read off one forward pass (hooks), not guessed from
module names. A fold is only correct when that convolution's output goes nowhere else, which a
hook cannot see, so the folded copy is checked against the original on a random batch and
thrown away if the logits differ. Each folded convolution keeps what its BatchNorm knew
(`BN_REFERENCE`), so the BN-statistics loss runs on the copy too.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# Relative tolerance of the check: folding changes rounding (~1e-6); a wrong fold changes logits
# by O(1).
CHECK_RTOL = 1e-3


class _DropAct(nn.Module):
    """What timm's BatchNormAct2d does after its batch norm: dropout (identity in eval), then the
    activation. ReLU6 runs out of place: in place it cost an extra copy per map on the CPU. Every
    activation runs out of place: the BN-statistics loss keeps the convolution's output for its
    backward, which an in-place activation would overwrite."""

    def __init__(self, drop: nn.Module, act: nn.Module):
        super().__init__()
        self.drop = drop
        if getattr(act, "inplace", False):
            act = copy.copy(act)
            act.inplace = False
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        if isinstance(self.act, nn.ReLU6):
            return F.relu6(x)
        if isinstance(self.act, nn.ReLU):
            return F.relu(x)
        return self.act(x)


def _is_foldable_bn(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.BatchNorm2d)
        and module.running_mean is not None
        and module.running_var is not None
        and (type(module) is nn.BatchNorm2d or _is_bn_act(module))
    )


def _is_bn_act(module: nn.Module) -> bool:
    # timm.layers.BatchNormAct2d, matched by shape so timm stays an optional import here.
    return type(module).__name__ == "BatchNormAct2d" and hasattr(module, "act") and hasattr(module, "drop")


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) where the BN's input was exactly that convolution's output."""
    names = {id(m): n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []

    def after_conv(module, _inputs, output):
        produced[id(output)] = (names[id(module)], output)  # keep the tensor: ids stay unique

    def before_bn(module, inputs):
        hit = produced.get(id(inputs[0]))
        if hit is not None and hit[1] is inputs[0]:
            pairs.append((hit[0], names[id(module)]))

    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
            handles.append(module.register_forward_hook(after_conv))
        elif _is_foldable_bn(module):
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    # A module run twice would be folded twice: keep each conv and each BN once.
    convs = [c for c, _ in pairs]
    bns = [b for _, b in pairs]
    return [(c, b) for c, b in pairs if convs.count(c) == 1 and bns.count(b) == 1]


# The buffer a folded convolution keeps of its BatchNorm, [4, C]: (gain, offset) that map the
# folded output back to the BatchNorm's input (input = gain * output + offset), then the running
# mean and variance. The BN-statistics loss (losses.BatchNormStats) reads it, so that it can run
# on the fast folded copy. Absent where a BatchNorm weight is 0 (the map cannot be inverted).
BN_REFERENCE = "cag_bn_reference"


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    shift = beta - bn.running_mean * scale
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter((conv.weight * scale.view(-1, 1, 1, 1)).detach(), requires_grad=False)
    conv.bias = nn.Parameter((bias * scale + shift).detach(), requires_grad=False)
    if bool((scale != 0).all()):
        # folded output = scale * bn_input + shift, so bn_input = output / scale - shift / scale
        reference = torch.stack([1 / scale, -shift / scale, bn.running_mean, bn.running_var]).detach()
        conv.register_buffer(BN_REFERENCE, reference.float(), persistent=False)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """A folded copy of the eval-mode `model`, or None when it has nothing to fold or the check
    on `example` (a batch of normalized inputs) fails. The original is left untouched."""
    if model.training or not any(_is_foldable_bn(m) for m in model.modules()):
        return None
    with torch.inference_mode(False), torch.no_grad():
        folded = copy.deepcopy(model)
        pairs = _conv_bn_pairs(folded, example)
        if not pairs:
            return None
        for conv_name, bn_name in pairs:
            bn = folded.get_submodule(bn_name)
            _fold(folded.get_submodule(conv_name), bn)
            _replace(folded, bn_name, _DropAct(bn.drop, bn.act) if _is_bn_act(bn) else nn.Identity())
        folded.eval().requires_grad_(False)
        # TF32 convolutions (cuDNN's default) would round by ~1e-3 and could fail the check.
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            expected, got = model(example).float(), folded(example).float()
    error = float((got - expected).abs().max())
    scale = float(expected.abs().max())
    if not error <= CHECK_RTOL * max(scale, 1e-6):
        log.warning("BatchNorm folding changed the logits by %.3g (max |logit| %.3g); not used", error, scale)
        return None
    return folded
