"""Safe reading of weights files.

safetensors first; `.pth/.pt/.bin/.ckpt` only through `torch.load(weights_only=True)`, which
refuses any pickle that would run code. Nothing here ever unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch

from .errors import WeightsError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

# Containers that training scripts wrap a state dict in, tried in this order.
_CONTAINER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")

CONVERT_HINT = (
    "convert it once, in a Python you trust, with: "
    "import torch, safetensors.torch as st; "
    "st.save_file({k: v.contiguous() for k, v in torch.load('IN.pth', weights_only=False)['model'].items()}, "
    "'OUT.safetensors')"
)


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a .safetensors header ({} when there is none)."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise WeightsError(f"'{Path(path).name}' is not a readable .safetensors file ({_detail(exc)}).") from exc


def load_file(path: str | os.PathLike, *, container_key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict (name -> tensor) from a weights file, on the CPU, without running code.

    container_key: for pickled checkpoints, the key that holds the state dict (e.g. "model" for the
    facebookresearch/mae files); by default common wrapper keys are tried.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file '{path}' does not exist.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _load_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _load_pickled(path, container_key)
    raise WeightsError(
        f"'{path.name}' has the extension '{suffix}'; weights files must be one of {', '.join(WEIGHT_SUFFIXES)}."
    )


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    try:
        return safetensors.torch.load_file(os.fspath(path), device="cpu")
    except Exception as exc:
        raise WeightsError(
            f"'{path.name}' is not a readable .safetensors file (corrupt or truncated?): {_detail(exc)}."
        ) from exc


def _load_pickled(path: Path, container_key: str | None) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _needs_code(exc):
            # weights_only refused something that would need code execution to rebuild.
            found = _GLOBAL.search(str(exc))
            what = f"it pickles {found.group(1)}, not just tensors" if found else "it pickles more than tensors"
            raise WeightsError(
                f"'{path.name}' needs arbitrary code to load ({what}), so it is refused; {CONVERT_HINT}."
            ) from exc
        # Random bytes, or a plain pickle.dump (whose opcodes torch.save never writes).
        raise WeightsError(
            f"'{path.name}' is refused: the safe loader (torch.load with weights_only=True) cannot read it "
            f"({_detail(exc)}); it is corrupt, or not a plain torch.save checkpoint: if it is one you trust, {CONVERT_HINT}."
        ) from exc
    except Exception as exc:  # a corrupt pickle can fail in the unpickler with any error type
        raise WeightsError(_unreadable(path.name, exc)) from exc
    return _unwrap_state_dict(obj, path.name, container_key)


# torch's weights_only unpickler says one of these when a pickle wants more than tensors.
_CODE_MARKERS = ("GLOBAL", "unrecognized function", "add_safe_globals")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _needs_code(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in _CODE_MARKERS)


def _detail(exc: BaseException) -> str:
    """The gist of a library error on one line: torch's unpickler message without its advice."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1].strip()
    first = text.splitlines()[0].strip().rstrip(".") if text else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _unreadable(filename: str, exc: BaseException) -> str:
    return f"'{filename}' could not be read as a PyTorch checkpoint (corrupt or truncated?): {_detail(exc)}."


def _unwrap_state_dict(obj: object, filename: str, container_key: str | None) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and container_key is not None:
        if container_key not in obj:
            raise WeightsError(
                f"'{filename}' has no '{container_key}' entry; top-level keys: {sorted(map(str, obj))[:10]}."
            )
        obj = obj[container_key]
    elif isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        for key in _CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise WeightsError(f"'{filename}' does not hold a state dict of tensors.")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    # DataParallel / DDP checkpoints prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: Mapping) -> bool:
    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= max(1, len(values) // 2)


def save_file(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None):
    """Write a state dict as .safetensors (contiguous CPU tensors, shared storage broken)."""
    import safetensors.torch

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    safetensors.torch.save_file(tensors, os.fspath(path), metadata=metadata)
