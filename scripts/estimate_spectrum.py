"""Estimate the natural-image amplitude spectrum behind the `phase` parameterization.

The `phase` parameterization (cag_core/parameterization.py, after MACO: Fel et al., "Unlocking
Feature Visualization for Deeper Networks with MAgnitude Constrained Optimization", 2023) fixes
each image's Fourier magnitudes to those of natural photos and optimizes only the phases. This
script measures, on the colour photos that ship inside scikit-image (no download), the two
numbers the parameterization needs, in its own colour space (sigmoid logits, decorrelated with
the Lucid colour matrix):

- the slope of the radially averaged amplitude spectrum, |X(f)| ~ f^-slope;
- the spatial standard deviation per decorrelated channel, which fixes the total energy.

    python -m scripts.estimate_spectrum            # prints the constants; they are in parameterization.py

The standard deviation is measured on the logits of photos whose pixel values were first pulled
into [0.02, 0.98] (a saturated pixel's logit is otherwise set by the clamp, not by the photo).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cag_core.parameterization import _COLOR, _logit

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")


def load_photos() -> list[torch.Tensor]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
        photos.append(torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float() / 255)
    return photos


def crops(photos: list[torch.Tensor], side: int, per_photo: int, generator: torch.Generator) -> torch.Tensor:
    out = []
    for photo in photos:
        h, w = photo.shape[-2:]
        for _ in range(per_photo):
            y = int(torch.randint(h - side + 1, (1,), generator=generator))
            x = int(torch.randint(w - side + 1, (1,), generator=generator))
            out.append(photo[:, y : y + side, x : x + side])
    return torch.stack(out)


def decorrelated_logits(images01: torch.Tensor) -> torch.Tensor:
    logits = _logit(0.02 + 0.96 * images01)
    return torch.einsum("bchw,dc->bdhw", logits, torch.linalg.inv(_COLOR))


def estimate(side: int = 256, per_photo: int = 16, seed: int = 0) -> dict:
    x = decorrelated_logits(crops(load_photos(), side, per_photo, torch.Generator().manual_seed(seed)))
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1)).mean(0)
    window = torch.hann_window(side, periodic=False)
    window = window[:, None] * window[None, :]
    amplitude = torch.fft.rfft2(x * window, norm="ortho").abs().mean(0)  # [3, side, side//2+1]
    fy = torch.fft.fftfreq(side)[:, None]
    fx = torch.fft.rfftfreq(side)[None, :]
    f = torch.sqrt(fx * fx + fy * fy)
    band = (f > 4 / side) & (f < 0.25)  # above the window's blur, below where JPEG and demosaicing act
    slopes = [-np.polyfit(np.log(f[band].numpy()), np.log(a[band].numpy()), 1)[0] for a in amplitude]
    return {"slope_per_channel": [round(float(s), 3) for s in slopes], "slope": round(float(np.mean(slopes)), 2),
            "std_per_channel": [round(float(s), 2) for s in std], "crops": x.shape[0], "side": side}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--per-photo", type=int, default=16)
    args = parser.parse_args(argv)
    print(estimate(args.side, args.per_photo))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
