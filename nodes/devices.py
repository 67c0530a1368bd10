"""Device choices for the loader nodes, and moving modules without breaking autograd."""

from __future__ import annotations

import torch
from torch import nn

from ..cag_core.errors import CaGError

AUTO = "auto"


def device_choices() -> list[str]:
    """'auto' (ComfyUI's device, which honours --cpu), 'cpu', and the accelerators present."""
    choices = [AUTO, "cpu"]
    if torch.cuda.is_available():
        choices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def resolve_device(choice: str) -> torch.device:
    """The torch device for a combo value; 'auto' asks ComfyUI's model management."""
    if choice == AUTO:
        import comfy.model_management

        return torch.device(comfy.model_management.get_torch_device())
    if choice not in device_choices():
        raise CaGError(f"Device '{choice}' is not available here; choose one of {', '.join(device_choices())}.")
    return torch.device(choice)


def move_module(module: nn.Module, device: torch.device) -> nn.Module:
    """module.to(device), outside inference mode: tensors created under ComfyUI's
    torch.inference_mode() could never be saved for backward by the optimize node."""
    with torch.inference_mode(False):
        return module.to(device)


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")
