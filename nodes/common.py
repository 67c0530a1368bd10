"""Small helpers shared by the node modules."""

from __future__ import annotations

from typing import Callable

from ..cag_core.class_names import combo_label, imagenet_class_names
from ..cag_core.errors import CaGError

CATEGORY = "CaG"
# Node socket types of the pack (ComfyUI matches links by these strings).
CLASSIFIER = "CAG_CLASSIFIER"
MAE = "CAG_MAE"
SEED_MAX = 0xFFFFFFFFFFFFFFFF  # torch.Generator.manual_seed accepts any 64-bit value
DEFAULT_CLASS = "207: golden retriever"


def imagenet_choices() -> list[str]:
    """'0: tench' ... '999: toilet tissue': the searchable class list (unique thanks to the index)."""
    return [combo_label(i, name) for i, name in enumerate(imagenet_class_names())]


def validation_result(check: Callable[[], object]) -> bool | str:
    """True when `check()` passes, else its CaGError message (what VALIDATE_INPUTS returns)."""
    try:
        check()
    except CaGError as exc:
        return str(exc)
    return True


def range_result(name: str, value: object, low: float, high: float, note: str = "") -> bool | str:
    """True when `value` is None (a linked input, checked when it arrives) or a number in [low, high],
    else the sentence saying so. NaN fails: it passes ComfyUI's own min/max check, since every
    comparison with NaN is False."""
    if value is None or (isinstance(value, (int, float)) and low <= value <= high):
        return True
    return f"{name} must be between {low:g} and {high:g}{note}, got {value}."


def first_failure(*results: bool | str) -> bool | str:
    """The first message among validation results, or True."""
    return next((r for r in results if r is not True), True)
