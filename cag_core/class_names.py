"""ImageNet class names (from timm's bundled dataset info; no hand-written list) and lookup."""

from __future__ import annotations

import difflib
from functools import lru_cache

from .errors import CaGError


@lru_cache(maxsize=4)
def imagenet_class_names(subset: str = "imagenet-1k") -> tuple[str, ...]:
    """Readable names, e.g. 'tabby, tabby cat', in the classifier's output order."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo(subset).label_descriptions())


def short_name(name: str) -> str:
    """The first synonym: 'tabby, tabby cat' -> 'tabby'."""
    return name.split(",")[0].strip()


def _normalize(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


@lru_cache(maxsize=16)
def _synonym_index(class_names: tuple[str, ...]) -> dict[str, int]:
    # Each comma-separated synonym names its class; the first class to claim a synonym keeps it
    # (ImageNet has a few duplicates, e.g. two 'crane' and two 'maillot').
    index: dict[str, int] = {}
    for i, name in enumerate(class_names):
        index.setdefault(_normalize(name), i)
        for synonym in name.split(","):
            index.setdefault(_normalize(synonym), i)
    return index


def resolve_class(token: str, class_names: tuple[str, ...] | list[str]) -> int:
    """Class index for a name, a synonym, 'index: name' (the node's combo format) or an integer."""
    class_names = tuple(class_names)
    text = token.strip()
    if not text:
        raise CaGError("Empty class name in the target.")
    head = text.split(":", 1)[0].strip() if ":" in text else text
    if head.lstrip("-").isdigit():
        index = int(head)
        if not 0 <= index < len(class_names):
            raise CaGError(
                f"Class index {index} is out of range: this classifier has classes 0..{len(class_names) - 1}."
            )
        return index
    found = _synonym_index(class_names).get(_normalize(text))
    if found is not None:
        return found
    choices = list(_synonym_index(class_names))
    close = difflib.get_close_matches(_normalize(text), choices, n=4, cutoff=0.6)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    raise CaGError(f"Unknown class '{text}' for a classifier with {len(class_names)} classes.{hint}")


def combo_label(index: int, name: str) -> str:
    """'207: golden retriever' -- the entry shown in the node's searchable class list."""
    return f"{index}: {short_name(name)}"
