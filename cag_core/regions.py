"""Starting from a picture: which pixels may change (a mask) and how close the result stays (an anchor).

- **Mask** (1 = may change, 0 = keep; soft values blend): the step optimizes only the masked
  region. Every step, the classifier and the MAE see the *composite* `start + mask * (x - start)`,
  so the new region is made to fit its surroundings, and where the mask is 0 the composite is the
  start pixel exactly (x - start is finite and 0 * it is 0), in every step and in the result.
- **Feather** (px): softens the seam inside the masked region only: the mask ramps from 0 at its
  edge to its full value `feather` px inside, so the kept region stays exact.
- **Fill** (`OptimizeConfig.fill_masked`): start the masked region from a smooth extension of the
  kept pixels around it (push-pull: averaged at coarser and coarser scales, then blended back),
  instead of whatever it holds, e.g. Pad Image for Outpainting's flat gray border.
- **Anchor** (`OptimizeConfig.anchor_weight`): a penalty on how far the result's 16x16 thumbnail
  (each cell the mean colour of its block) moves from the start's: colours and layout at that scale
  stay, detail and texture may change. With a photo as start and another class as target this is
  "img2img"; 0 = off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import CaGError

ANCHOR_GRID = 16  # the anchor compares thumbnails of this many cells per side (fewer for tiny images)


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A mask ([H, W], [B, H, W] as ComfyUI's MASK, or [B, 1, H, W]) as [B, 1, height, width] float in
    [0, 1], resized when its size differs (bilinear; the same aspect ratio only). NaN/Inf and odd
    shapes are refused."""
    if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3, 4) or (mask.dim() == 4 and mask.shape[1] != 1):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise CaGError(f"The mask must be [height, width] or [batch, height, width], got {shape}.")
    m = mask.detach().float()
    m = m.view(1, 1, *m.shape) if m.dim() == 2 else (m.unsqueeze(1) if m.dim() == 3 else m)
    if m.numel() == 0:
        raise CaGError(f"The mask is empty (shape {tuple(mask.shape)}).")
    bad = int((~torch.isfinite(m)).sum())
    if bad:
        raise CaGError(f"The mask has {bad} NaN or Inf values; an upstream node failed.")
    mh, mw = m.shape[-2:]
    if (mh, mw) != (height, width):
        # Same aspect ratio up to the rounding of a resize (one pixel of the smaller picture).
        if abs(mw * height - mh * width) > max(height, width, mh, mw):
            raise CaGError(f"The mask is {mw}x{mh} but the image is {width}x{height}: another aspect ratio. "
                           "Make the mask from this image (or scale both the same way).")
        shrinking = mh > height or mw > width
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    return m.clamp(0, 1)


def check_mask_batch(masks: int, batch: int) -> None:
    """A mask batch must be 1 (broadcast) or the image batch."""
    if masks not in (1, batch):
        raise CaGError(f"The mask has a batch of {masks} but there are {batch} images: give 1 mask or {batch}.")


def mask_for_images(mask: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """`resize_mask` as [batch, 1, height, width], broadcast from a batch of 1. Also refuses an empty
    mask (nothing may change) and a batch that is neither 1 nor `batch`."""
    m = resize_mask(mask, height, width)
    check_mask_batch(m.shape[0], batch)
    m = m.expand(batch, 1, height, width).contiguous()
    empty = [i for i in range(batch) if not bool((m[i] > 0).any())]
    if empty:
        which = "The mask is" if m.shape[0] == 1 or len(empty) == batch else f"The mask of image {empty[0]} is"
        raise CaGError(f"{which} empty (all 0): nothing may change. Paint the region to regenerate (1 = may change), "
                       "or leave the mask unconnected to change the whole image.")
    return m


def feather(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Soften the seam inside the masked region: `mask * clamp(2 * box_blur(mask) - 1, 0, 1)` with a
    box of half-width `px` (image borders do not count as kept). The result is 0 wherever `mask`
    is 0, and reaches the mask's value about `px` pixels inside a straight edge."""
    if px < 0:
        raise CaGError(f"feather must be 0 or more pixels, got {px}.")
    if px == 0:
        return mask
    size = 2 * int(px) + 1
    blurred = F.avg_pool2d(mask, size, stride=1, padding=int(px), count_include_pad=False)
    return mask * (2 * blurred - 1).clamp(0, 1)


def composite(images: torch.Tensor, start: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`start` where the mask is 0 (exactly), `images` where it is 1, blended between."""
    return start + mask.to(images.dtype) * (images - start)


def anchor_loss(images: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """[B]: mean squared difference of the two pictures' 16x16 mean-colour thumbnails."""
    h, w = images.shape[-2:]
    grid = (min(ANCHOR_GRID, h), min(ANCHOR_GRID, w))
    a = F.adaptive_avg_pool2d(images.float(), grid)
    b = F.adaptive_avg_pool2d(start.float(), grid)
    return (a - b).square().flatten(1).mean(1)


def fill_from_surroundings(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`images` with the masked region ([B, 1, H, W], 1 = fill) replaced by a smooth extension of
    the kept pixels (push-pull). Where the mask is 0 the pixels are unchanged; with nothing kept at
    all the region becomes mid-gray."""
    known = (1 - mask).to(images.dtype)
    pyramid = []
    values, weights = images * known, known
    while min(values.shape[-2:]) > 1:
        pyramid.append((values, weights))
        values = F.avg_pool2d(values, 2, ceil_mode=True)
        weights = F.avg_pool2d(weights, 2, ceil_mode=True)
    filled = torch.where(weights > 0, values / weights.clamp_min(1e-12), torch.full_like(values, 0.5))
    for values, weights in reversed(pyramid):
        up = F.interpolate(filled, size=values.shape[-2:], mode="bilinear", align_corners=False)
        filled = values + (1 - weights) * up  # known part of the block, the coarser estimate for the rest
    return torch.where(mask > 0, filled, images)
