"""The run of "A stronger BN prior on the default" (README.md here): benchmarks.recipe_search with two
more candidates, the default `lucid_steep_std` with bn_weight 0.002 and 0.004 (0.001), measured
every other step as the default; the same cost.

    python benchmarks/results/recipe_search/screen_bn_strength.py --classes 85,450,591,869 --seeds 0 \
        --variants steep_bn_alt_std36,std_bn2x,std_bn4x --out scr.json --sheets scrsheets --labeled scr
"""
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402

default = get_recipe("lucid_steep_std")
for weight, name in ((0.002, "std_bn2x"), (0.004, "std_bn4x")):
    rs.CANDIDATES[name] = Variant(f"lucid_steep_std with bn_weight {weight} (0.001)",
                                  replace(default, stage=replace(default.stage, bn_weight=weight)))
sys.exit(rs.main(sys.argv[1:]))
