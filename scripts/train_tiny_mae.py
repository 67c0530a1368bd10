"""Train the small MAE the project ships: `models/mae/cag_tiny_mae_skimage.safetensors`.

Why it exists: the real MAE weights (mae_visualize_vit_*.pth, 0.4-2.6 GB) come from a model hub,
which CI and offline machines cannot reach. This toy MAE, trained in minutes on the CPU from the
photos that ship inside scikit-image, lets the "MAE in the loop" path run with weights that
reconstruct natural-image structure (poorly, at 64 px), in tests, benchmarks and workflows.
It is not a substitute for the published MAE-Large.

    python -m scripts.train_tiny_mae --steps 4000 --out models/mae/cag_tiny_mae_skimage.safetensors

Same recipe as facebookresearch/mae at toy scale: mask 75 % of the patches, reconstruct
ImageNet-normalized pixels (no per-patch normalization, so the output is an image), MSE on the
masked patches, AdamW with warmup + cosine decay.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cag_core.mae import IMAGENET_MEAN, IMAGENET_STD, MAEConfig, mae_from_config, save_mae

TINY_MAE = MAEConfig(
    img_size=64, patch_size=8, embed_dim=96, depth=4, num_heads=4,
    decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4,
)
# Colour photos bundled with scikit-image (no download).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "hubble_deep_field")


def load_photos() -> list[torch.Tensor]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        image = np.ascontiguousarray(getattr(skimage.data, name)())
        if image.ndim == 3 and image.shape[2] >= 3:
            photos.append(torch.from_numpy(image[..., :3]).permute(2, 0, 1).float() / 255)
    return photos


def random_crops(photos: list[torch.Tensor], batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random resized crops (8-100 % of the shorter side) with flips, as [batch, 3, size, size]."""
    out = []
    for _ in range(batch):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        h, w = photo.shape[-2:]
        side = int(min(h, w) * (0.08 + 0.92 * float(torch.rand(1, generator=generator)) ** 2))
        side = max(side, 16)
        y = int(torch.randint(h - side + 1, (1,), generator=generator))
        x = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = F.interpolate(photo[None, :, y : y + side, x : x + side], size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)
        if float(torch.rand(1, generator=generator)) < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out).clamp(0, 1)


def masked_mse(model, images01: torch.Tensor, generator: torch.Generator, mask_ratio: float) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    normalized = (images01 - mean) / std
    noise = model.sample_noise(images01.shape[0], generator)
    keep = model.config.num_patches - int(model.config.num_patches * mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    latent = model.forward_encoder(normalized, ids_shuffle[:, :keep])
    predicted = model.forward_decoder(latent, ids_restore)  # [B, L, p*p*3]
    target = model.patchify(normalized)
    mask = torch.ones_like(noise)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    per_patch = ((predicted - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="models/mae/cag_tiny_mae_skimage.safetensors")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    photos = load_photos()
    with torch.inference_mode(False):
        model = mae_from_config(TINY_MAE, seed=args.seed)
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    held_out = random_crops(photos, 64, TINY_MAE.img_size, torch.Generator().manual_seed(12345))
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = random_crops(photos, args.batch, TINY_MAE.img_size, generator)
        loss = masked_mse(model, batch, generator, 0.75)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps:
            with torch.no_grad():
                val = masked_mse(model, held_out, torch.Generator().manual_seed(0), 0.75)
            print(f"step {step:5d}  train {loss.item():.4f}  held-out {val.item():.4f}  {time.perf_counter() - start:.0f} s",
                  flush=True)
    model.eval().requires_grad_(False)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_mae(model, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
