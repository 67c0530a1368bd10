"""ComfyUI IMAGE <-> engine images, and preview pictures.

ComfyUI's IMAGE is float [B, H, W, C] in 0..1 on the CPU; the engine works on [B, 3, H, W].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..cag_core.errors import CaGError


def comfy_to_engine(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> float32 [B, 3, H, W]: RGBA loses alpha, grayscale is repeated."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CaGError(f"Expected an IMAGE of shape [batch, height, width, channels], got {shape}.")
    channels = image.shape[-1]
    if channels == 4:
        image = image[..., :3]
    elif channels == 1:
        image = image.expand(*image.shape[:-1], 3)
    elif channels != 3:
        raise CaGError(f"Expected an RGB, RGBA or grayscale IMAGE, got {channels} channels.")
    return image.movedim(-1, 1).float().clamp(0, 1).contiguous()


def engine_to_comfy(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] on any device -> IMAGE float32 [B, H, W, C] on the CPU."""
    return images.detach().movedim(1, -1).to("cpu", torch.float32).contiguous()


def preview_image(images: torch.Tensor) -> Image.Image:
    """The first image of an engine batch as an 8-bit PIL image (for the live preview)."""
    pixels = images[0].detach().float().clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels.movedim(0, -1).numpy()))
