"""Fail fast, with the pip command, when a Python package the pack needs is missing.

The engine imports timm and open_clip lazily, so without this check a missing package would
only show up later as a broken node list or a traceback in the middle of a run.
"""

from __future__ import annotations

import importlib.util

# import name -> pip package
REQUIRED = {
    "timm": "timm",
    "open_clip": "open_clip_torch",
    "safetensors": "safetensors",
    "einops": "einops",
}


def missing_packages() -> list[str]:
    return [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]


def check_dependencies() -> None:
    """ImportError naming every missing pip package (one message for all)."""
    missing = missing_packages()
    if missing:
        raise ImportError(
            f"missing Python package(s): {', '.join(missing)}. Install them into ComfyUI's Python: "
            f"python -m pip install {' '.join(missing)}"
        )
