"""The finish screened on 2026-12-07: each saved image desaturated toward its luminance and blurred,
then judged again. A measurement script, not part of the pack.

    python benchmarks/results/panel/finish/finish_screen.py SRC_DIR DST_ROOT [variant,...]

SRC_DIR holds <class>.png; writes DST_ROOT/<variant>/<class>.png and DST_ROOT/judges.json
(Lite1/Lite2 top-1, top-5, mean p on the saved 8-bit PNGs, judged as benchmarks.peers judges)."""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the project root
from benchmarks.peers import judge  # noqa: E402
from cag_core.timm_classifier import embedded_classifier  # noqa: E402

LUMA = (0.299, 0.587, 0.114)  # Rec. 601


def load(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()[None] / 255


def save(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian, reflect padding."""
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1).float()
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


def desaturate(x: torch.Tensor, chroma: float) -> torch.Tensor:
    luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return luma + chroma * (x - luma)


VARIANTS = {
    "orig": lambda x: x,
    "sat70": lambda x: desaturate(x, 0.7),
    "blur07": lambda x: blur(x, 0.7),
    "sat70_blur07": lambda x: blur(desaturate(x, 0.7), 0.7),
    "sat80_blur05": lambda x: blur(desaturate(x, 0.8), 0.5),
    "sat75_blur08": lambda x: blur(desaturate(x, 0.75), 0.8),  # the one shown to viewers
}

if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(VARIANTS)
    judges = {"Lite1": embedded_classifier("efficientnet-lite1"), "Lite2": embedded_classifier("efficientnet-lite2")}
    out = {}
    for name in names:
        rows = []
        for path in sorted(src.glob("*.png"), key=lambda p: int(p.stem)):
            image = VARIANTS[name](load(path))
            save(image, dst / name / path.name)
            rows.append({k: judge(net, image[0], int(path.stem)) for k, net in judges.items()})
        out[name] = {k: {"top1": sum(r[k]["top1"] for r in rows), "top5": sum(r[k]["top5"] for r in rows),
                         "p": round(sum(r[k]["p"] for r in rows) / len(rows), 3)} for k in judges}
        print(name, out[name], flush=True)
    (dst / "judges.json").write_text(json.dumps(out, indent=1) + "\n")
