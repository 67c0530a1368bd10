"""Make the example workflows' start photos in workflows/inputs/ from scikit-image's bundled data.

    python -m scripts.make_example_inputs

Only photos that scikit-image's docstrings mark CC0 / public domain are used; workflows/inputs/
LICENSES.md records each one's source and licence. Each is resized to 384x256 (they are all 3:2).

- inpaint_coffee.png: RGBA; alpha 0 over an ellipse covering the cup (ComfyUI's Load Image makes
  MASK = 1 - alpha, so 1 = the region CaG may regenerate); the RGB under it is the photo's own.
- outpaint_rocket.jpg: to be padded by core "Pad Image for Outpainting".
- img2img_chelsea.jpg: to be pushed toward another ImageNet class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "workflows" / "inputs"
SIZE = (384, 256)  # width, height
# The cup of coffee() at 384x256, handle included (the saucer and most of the spoon stay): (left, top, right, bottom).
CUP_ELLIPSE = (94, 4, 274, 204)
JPEG_QUALITY = 90


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).resize(SIZE, Image.Resampling.LANCZOS)


def inpaint_photo() -> Image.Image:
    photo = _photo("coffee").convert("RGBA")
    alpha = Image.new("L", SIZE, 255)
    ImageDraw.Draw(alpha).ellipse(CUP_ELLIPSE, fill=0)
    photo.putalpha(alpha)
    return photo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    inpaint_photo().save(args.out / "inpaint_coffee.png", optimize=True)
    _photo("rocket").save(args.out / "outpaint_rocket.jpg", quality=JPEG_QUALITY)
    _photo("chelsea").save(args.out / "img2img_chelsea.jpg", quality=JPEG_QUALITY)
    for path in sorted(args.out.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
