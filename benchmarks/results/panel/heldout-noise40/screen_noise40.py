"""The run of this panel: benchmarks.recipe_search with one more candidate, the default with more
view noise (recipe_search has no such candidate on lucid_steep_std; this adds it in its own process).

- std_noise40: the default `lucid_steep_std` with view noise std U(0, 0.4) instead of U(0, 0.3);
  the same cost.

    python benchmarks/results/panel/heldout-noise40/screen_noise40.py \
        --classes 21,33,63,117,139,157,200,242,267,298,328,362,385,424,467,498,526,557,570,607,655,683,716,719,778,788,818,855,899,920,946,977 \
        --seeds 0 --variants steep_bn_alt_std36,std_noise40 --out runs/h14.json --sheets runs/h14sheets --labeled runs/h14
"""
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402

default = get_recipe("lucid_steep_std")
rs.CANDIDATES["std_noise40"] = Variant(
    "lucid_steep_std with view noise std U(0, 0.4) (0.3)",
    replace(default, stage=replace(default.stage, augment=replace(default.stage.augment, noise=0.4))))
sys.exit(rs.main(sys.argv[1:]))
