"""Classify images: the top-k classes of each image and, for a target, how likely it is.

The same classifiers the engine generates with (a `Classifier`, CLIP text classifiers included,
or an `Ensemble`) are asked what they see, e.g. to check a generated or edited image:

    result = classify(classifier, images01, top_k=5, target="tabby:0.7 | tiger cat:0.3")
    print(result.report())

Each member resizes and normalizes the images itself (`Classifier.prepare`, inside its forward),
so any image size works. An ensemble's probabilities are the weighted mean of its members'
softmax probabilities (weights normalized to sum to 1), the natural reading of "several networks
vote"; the optimization's ensemble loss averages the members' losses instead.

p(target), for a target in the grammar of `targets.py` (one line per image, cycled over the
batch), is the positive-weighted sum of the class probabilities, with the positive weights of a
line normalized to sum to 1: for one class it is that class's probability; for 'tabby:0.7 |
tiger cat:0.3' it is 0.7 p(tabby) + 0.3 p(tiger cat), a weighted mean, so it lies in [0, 1] and
never exceeds the largest of those probabilities. Negative weights (classes to avoid) do not
enter p(target); the report lists their probabilities beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .class_names import combo_label, imagenet_class_names
from .classifier import Classifier, Ensemble, as_ensemble
from .errors import CaGError
from .targets import Target, parse_target

DEFAULT_BATCH = 16  # images per forward: bounded memory for big batches, one pass for small ones


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str  # readable: '281: tabby' for ImageNet classes, the class name itself otherwise
    probability: float


@dataclass(frozen=True)
class ImageClassification:
    """What the classifier says about one image."""

    top: tuple[ClassScore, ...]  # most likely first
    target: str | None = None  # the target line for this image, if a target was given
    p_target: float | None = None
    target_classes: tuple[tuple[ClassScore, float], ...] = ()  # (class, its weight) for every class in the line


@dataclass(frozen=True)
class Classification:
    """Per-image results plus the full probabilities [B, C] (float32, CPU)."""

    images: tuple[ImageClassification, ...]
    probabilities: torch.Tensor
    classifier_name: str

    @property
    def p_target(self) -> torch.Tensor | None:
        """p(target) per image [B], or None without a target."""
        if self.images and self.images[0].p_target is None:
            return None
        return torch.tensor([image.p_target for image in self.images])

    def report(self, labels: Sequence[str] | None = None) -> str:
        """Readable text: the classifier, then per image a header (its label, by default
        'image 1', ...) and its top-k as 'probability  name' lines, then p(target)."""
        labels = list(labels) if labels is not None else [f"image {i + 1}" for i in range(len(self.images))]
        blocks = [f"classifier: {self.classifier_name}"]
        for label, image in zip(labels, self.images):
            lines = [f"{label}:"]
            lines += [f"  {format_probability(s.probability)}  {s.name}" for s in image.top]
            if image.target is not None:
                lines.append(f"  p(target) {format_probability(image.p_target)}  target '{image.target}'")
                if len(image.target_classes) > 1 or any(w < 0 for _, w in image.target_classes):
                    lines += [f"    {format_probability(s.probability)}  {s.name} (weight {w:g})"
                              for s, w in image.target_classes]
            blocks.append("\n".join(lines))
        return "\n".join(blocks)


def format_probability(p: float) -> str:
    # Tiny probabilities are the interesting ones for a target the image is far from.
    return f"{p:.3f}" if p >= 0.001 or p == 0 else f"{p:.1e}"


def _batches(images: torch.Tensor | Sequence[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """[B, 3, H, W] in chunks; a list of [3, H, W] images (sizes may differ) in runs of one size."""
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
        return
    run: list[torch.Tensor] = []
    for image in images:
        if run and (image.shape != run[0].shape or len(run) == batch_size):
            yield torch.stack(run)
            run = []
        run.append(image)
    if run:
        yield torch.stack(run)


def _check_images(images: torch.Tensor | Sequence[torch.Tensor]) -> int:
    """The number of images; CaGError unless they are RGB images with at least one pixel."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise CaGError(f"Expected RGB images of shape [batch, 3, height, width], got {tuple(images.shape)}.")
        items = [images[0]] if len(images) else []
    else:
        items = list(images)
        for item in items:
            if not isinstance(item, torch.Tensor) or item.dim() != 3 or item.shape[0] != 3:
                shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
                raise CaGError(f"Expected RGB images of shape [3, height, width], got {shape}.")
    if not items:
        raise CaGError("No images to classify.")
    for item in items:
        if item.numel() == 0:
            raise CaGError(f"Cannot classify an empty image (shape {tuple(item.shape)}).")
    tensors = [images] if isinstance(images, torch.Tensor) else items
    bad = sum(int((~torch.isfinite(t)).sum()) for t in tensors)
    if bad:
        raise CaGError(f"The images have {bad} NaN or Inf values; the step that made them failed, so fix that first.")
    return len(images)


def _device(ensemble: Ensemble) -> torch.device:
    device = ensemble.members[0].device
    for member in ensemble.members[1:]:
        if member.device != device:
            raise CaGError(
                f"Classifier '{member.name}' is on {member.device} but '{ensemble.members[0].name}' is on {device}: "
                "load the classifiers of an ensemble on the same device."
            )
    return device


def _member_probabilities(member: Classifier, batch: torch.Tensor) -> torch.Tensor:
    dtype = next((p.dtype for p in member.parameters()), torch.float32)
    return member(batch.to(dtype)).float().softmax(dim=-1)


def class_probabilities(
    classifier: Classifier | Ensemble | Sequence[Classifier],
    images01: torch.Tensor | Sequence[torch.Tensor],
    batch_size: int = DEFAULT_BATCH,
) -> torch.Tensor:
    """Softmax probabilities [B, C] (float32, CPU) of images in [0, 1] ([B, 3, H, W], or a list of
    [3, H, W] of any sizes), on the classifier's device, `batch_size` images per forward; for an
    ensemble, the weighted mean of the members' probabilities. Works under inference mode."""
    if batch_size < 1:
        raise CaGError(f"batch_size must be at least 1, got {batch_size}.")
    _check_images(images01)
    ensemble = as_ensemble(classifier)
    device = _device(ensemble)
    total = sum(ensemble.weights)
    rows = []
    with torch.no_grad():
        for batch in _batches(images01, batch_size):
            batch = batch.to(device, torch.float32).clamp(0, 1)
            mixed = sum(
                (w / total) * _member_probabilities(m, batch) for m, w in zip(ensemble.members, ensemble.weights)
            )
            rows.append(mixed.cpu())
    return torch.cat(rows)


def target_probability(probabilities: torch.Tensor, target: Target) -> torch.Tensor:
    """p(target) per image [B]: sum over classes of positive weight x probability, with the
    positive weights of each image summing to 1 (see the module docstring)."""
    if target.positive.shape != probabilities.shape:
        raise CaGError(
            f"The target covers {tuple(target.positive.shape)} (images, classes) but the probabilities "
            f"are {tuple(probabilities.shape)}."
        )
    return (probabilities * target.positive.to(probabilities)).sum(dim=-1)


def _display_names(class_names: Sequence[str]) -> list[str]:
    if tuple(class_names) == imagenet_class_names():
        return [combo_label(i, name) for i, name in enumerate(class_names)]  # the picker's format
    return list(class_names)


def classify(
    classifier: Classifier | Ensemble | Sequence[Classifier],
    images01: torch.Tensor | Sequence[torch.Tensor],
    top_k: int = 5,
    target: str | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Classification:
    """Top-k classes per image and, when `target` is non-empty text, p(target) per image.

    top_k larger than the number of classes shows all of them. An unknown class or index in the
    target raises CaGError (with close matches) before any image is classified."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise CaGError(f"top_k must be a whole number of at least 1, got {top_k!r}.")
    ensemble = as_ensemble(classifier)
    count = _check_images(images01)
    parsed = parse_target(target, ensemble.class_names, count) if target and target.strip() else None
    probabilities = class_probabilities(ensemble, images01, batch_size)
    names = _display_names(ensemble.class_names)
    values, indices = probabilities.topk(min(top_k, ensemble.num_classes), dim=-1)
    p_target = target_probability(probabilities, parsed) if parsed is not None else None
    results = []
    for i in range(count):
        top = tuple(ClassScore(int(j), names[j], float(p)) for p, j in zip(values[i], indices[i]))
        if parsed is None:
            results.append(ImageClassification(top))
            continue
        weights = parsed.positive[i] - parsed.negative[i]
        involved = tuple(
            (ClassScore(int(j), names[j], float(probabilities[i, j])), float(weights[j]))
            for j in sorted(torch.nonzero(weights).flatten().tolist(), key=lambda j: -float(weights[j]))
        )
        results.append(ImageClassification(top, parsed.labels[i], float(p_target[i]), involved))
    return Classification(tuple(results), probabilities, ensemble.name)
