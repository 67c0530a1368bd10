"""ComfyUI IMAGE <-> engine images, and preview pictures.

ComfyUI's IMAGE is float [B, H, W, C] in 0..1 on the CPU; the engine works on [B, 3, H, W].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..cag_core.errors import CaGError


def check_image(image: object, what: str = "IMAGE") -> torch.Tensor:
    """CaGError unless `image` is a usable ComfyUI IMAGE: a floating-point [B, H, W, C] tensor with
    at least one pixel, holding real data (not a "meta" tensor), and no NaN or Inf values.

    Refusing is the rule for NaN/Inf pixels (an upstream node failed): clamping them would hide
    the fault and hand the optimizer a flat image. Finite values outside 0..1 are clamped later.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CaGError(f"Expected an {what} of shape [batch, height, width, channels], got {shape}.")
    if image.numel() == 0:
        raise CaGError(f"The {what} is empty (shape {tuple(image.shape)}): it needs at least one image of at least 1x1 pixel.")
    if not image.is_floating_point():
        raise CaGError(f"The {what} has dtype {image.dtype}; ComfyUI images are floating point in 0..1 (convert it first).")
    if image.device.type == "meta":
        raise CaGError(f"The {what} is a 'meta' tensor (a shape without data); connect a node that makes real pixels.")
    bad = int((~torch.isfinite(image)).sum())
    if bad:
        raise CaGError(
            f"The {what} has {bad} NaN or Inf values out of {image.numel()}; the node that made it failed "
            "(e.g. a VAE decode in fp16), so fix that node rather than generate from it."
        )
    return image


def comfy_to_engine(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> float32 [B, 3, H, W]: RGBA loses alpha, grayscale is repeated.

    Any floating dtype and device is accepted (converted to float32; values clamped to 0..1);
    see `check_image` for what is refused."""
    check_image(image)
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
