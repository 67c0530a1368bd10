"""The screening run of this panel: benchmarks.recipe_search with candidates that run the
classifier at a LARGER input side than its own 224 px in the first two stages (32 and 64 px, where
the layout forms). ../tuning2-small-early/ ran it at 128 px there and drew close-ups (a coyote's
face filling the frame, a pen nib): a CNN looks for its features at the pixel scale it was trained
at, so the smaller its input, the larger the subject it draws. A larger input should draw smaller,
whole subjects with their surroundings. benchmarks.quality's Variant runs each stage at its own
classifier side (`view_sizes`); the engine has no such option, so this is a measurement.

- std_large288: the default `lucid_steep_std` with the classifier at 288 px in the 32 and 64 px
  stages (224 at 128 and 256 px), the same 50/50/100/100 steps (more time: a 288 px step costs
  about 1.65x a 224 px one).
- std_large288_30: the same with 30 steps instead of 50 in the 32 and 64 px stages, about the
  default's time.

    python benchmarks/results/panel/tuning2-large-early/screen_large_early.py --classes tuning2 --seeds 0 \
        --variants std_large288,std_large288_30 --out runs/t2g.json --sheets runs/t2gsheets --labeled runs/t2l
"""
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402

default = get_recipe("lucid_steep_std")
EARLY = (288, 288, None, None)  # classifier input side per stage (None: its own, 224)
rs.CANDIDATES["std_large288"] = Variant(
    "lucid_steep_std with the classifier at 288 px in the 32 and 64 px stages", default, view_sizes=EARLY)
rs.CANDIDATES["std_large288_30"] = Variant(
    "lucid_steep_std with the classifier at 288 px in the 32 and 64 px stages, 30/30/100/100 steps",
    replace(default, steps=(30, 30, 100, 100)), view_sizes=EARLY)
sys.exit(rs.main(sys.argv[1:]))
