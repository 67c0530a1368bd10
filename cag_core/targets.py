"""Target text -> per-image class weights.

Grammar (one line per image, cycled over the batch; ';' also separates images):

    golden retriever                  one class by name or synonym
    207                               by index ("207: golden retriever", the node's combo format, too)
    tabby:0.7 | tiger cat:0.3         a weighted mix: soft-label cross-entropy toward 70/30
    a red fox | snow:0.3 | blurry:-1  a negative weight pushes that class's probability down

Positive weights are normalized to sum to 1 per image; negative weights are kept as they are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from .class_names import resolve_class
from .errors import CaGError

_WEIGHT = re.compile(r"^(?P<name>.*?):\s*(?P<weight>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$", re.S)


def split_weight(entry: str) -> tuple[str, float]:
    """'tabby:0.7' -> ('tabby', 0.7); '207: golden retriever' -> ('207: golden retriever', 1.0)."""
    match = _WEIGHT.match(entry.strip())
    if match and match.group("name").strip():
        weight = float(match.group("weight"))
        if not math.isfinite(weight):  # e.g. 'tabby:1e999' would make the target NaN
            raise CaGError(f"Target '{entry.strip()}' has weight {weight}; weights must be finite numbers.")
        return match.group("name").strip(), weight
    return entry.strip(), 1.0


def split_images(text: str) -> list[str]:
    """Per-image target lines; blank lines dropped."""
    return [line.strip() for line in re.split(r"[\n;]", text) if line.strip()]


@dataclass(frozen=True)
class Target:
    """Per-image weights over classes: `positive` rows sum to 1, `negative` rows are >= 0."""

    positive: torch.Tensor  # [B, C]
    negative: torch.Tensor  # [B, C]
    labels: tuple[str, ...]  # one readable description per image
    # Decided once on the CPU: asking a CUDA tensor every step would sync the device each step.
    has_negative: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "has_negative", bool(self.negative.abs().sum() > 0))

    def to(self, device: torch.device | str) -> "Target":
        return Target(self.positive.to(device), self.negative.to(device), self.labels)


def parse_target(text: str, class_names: list[str] | tuple[str, ...], batch_size: int) -> Target:
    """Parse target text for `batch_size` images over `class_names` (see module docstring)."""
    if batch_size < 1:
        raise CaGError(f"Batch size must be at least 1, got {batch_size}.")
    lines = split_images(text or "")
    if not lines:
        raise CaGError("The target is empty: give a class name, an index, or a weighted mix like 'tabby:0.7 | tiger cat:0.3'.")
    num_classes = len(class_names)
    rows_pos, rows_neg, labels = [], [], []
    for line in lines:
        pos = torch.zeros(num_classes)
        neg = torch.zeros(num_classes)
        for entry in (e for e in line.split("|") if e.strip()):
            name, weight = split_weight(entry)
            index = resolve_class(name, class_names)
            if weight > 0:
                pos[index] += weight
            elif weight < 0:
                neg[index] += -weight
        if pos.sum() <= 0:
            raise CaGError(f"Target '{line}' has no class with a positive weight.")
        rows_pos.append(pos / pos.sum())
        rows_neg.append(neg)
        labels.append(line)
    picks = [i % len(lines) for i in range(batch_size)]
    return Target(
        torch.stack([rows_pos[i] for i in picks]),
        torch.stack([rows_neg[i] for i in picks]),
        tuple(labels[i] for i in picks),
    )
