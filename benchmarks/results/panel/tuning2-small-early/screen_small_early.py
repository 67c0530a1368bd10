"""The screening run of this panel: benchmarks.recipe_search with candidates that run the
classifier at a smaller input side in the first two stages (32 and 64 px, where the layout forms and
the image has far fewer pixels than the classifier's 224 px input), spending the time saved on more
steps. benchmarks.quality's Variant has per-stage classifier input sides (`view_sizes`, as its
method ladder uses); the engine's `view_size` does not save compute yet (Classifier.prepare resizes
back to the native side), so this is a measurement, not an option of the pack.

- std_400_small128: the default `lucid_steep_std`, 100 steps in every stage, the classifier at
  128 px in the 32 and 64 px stages (native 224 at 128 and 256 px).
- std_400_small160: the same at 160 px.
- std_400: the default with 100 steps in every stage (the classifier at 224 throughout), for the
  time it would cost.

    python benchmarks/results/panel/tuning2-small-early/screen_small_early.py --classes tuning2 --seeds 0 \
        --variants std_400_small128 --out runs/t2s.json --sheets runs/t2ssheets --labeled runs/t2l
"""
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402

default = get_recipe("lucid_steep_std")
steps400 = replace(default, steps=(100, 100, 100, 100))
for side in (128, 160):
    rs.CANDIDATES[f"std_400_small{side}"] = Variant(
        f"lucid_steep_std, 100 steps in every stage, the classifier at {side} px in the 32 and 64 px stages",
        steps400, view_sizes=(side, side, None, None))
rs.CANDIDATES["std_400"] = Variant("lucid_steep_std, 100 steps in every stage", steps400)
sys.exit(rs.main(sys.argv[1:]))
