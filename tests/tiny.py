"""Tiny random-initialized models for engine tests (built in the test, no download)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from cag_core.classifier import Classifier
from cag_core.timm_classifier import classifier_from_file
from cag_core.weights import save_file

TINY_ARCH = "test_efficientnet"  # ~0.1 M parameters, has BatchNorm


def tiny_timm_model(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """A random tiny timm net whose BN running statistics are fitted to random images.

    With timm's default running stats (mean 0, var 1) a random net's activations shrink layer by
    layer and its logits hardly depend on the input; fitted statistics make it respond like a
    trained net does, so optimization tests have a gradient to follow.
    """
    torch.manual_seed(seed)
    model = timm.create_model(TINY_ARCH, pretrained=False, num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batches
            module.reset_running_stats()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(8, 3, 32, 32, generator=generator))
    return model.eval()


def tiny_classifier(num_classes: int = 10, size: int = 32, seed: int = 0) -> Classifier:
    """A tiny classifier fed at `size` px (small inputs keep the tests fast)."""
    return Classifier(
        tiny_timm_model(num_classes, seed),
        input_size=(size, size),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        class_names=[f"class {i}" for i in range(num_classes)],
        name="tiny",
    )


def save_tiny_classifier(path: Path, num_classes: int = 10, seed: int = 0, with_metadata: bool = True) -> Path:
    model = tiny_timm_model(num_classes, seed)
    save_file(model.state_dict(), path, metadata={"cag_arch": TINY_ARCH} if with_metadata else None)
    return path


def tiny_classifier_from_file(path: Path) -> Classifier:
    return classifier_from_file(path)
