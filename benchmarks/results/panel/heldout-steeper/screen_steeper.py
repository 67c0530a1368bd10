"""The run of this panel: benchmarks.recipe_search with one more candidate, the default with a
steeper spectrum (recipe_search has no such candidate on lucid_steep_std; this adds it in its own
process).

- std_decay175: the default `lucid_steep_std` with the Fourier step scale 1/f^1.75 (decay_power
  1.75) instead of 1/f^1.5; the same cost.

    python benchmarks/results/panel/heldout-steeper/screen_steeper.py \
        --classes 59,87,185,187,261,333,409,472,555,571,661,731,782,865,892,938 --seeds 0 \
        --variants steep_bn_alt_std36,std_decay175 --out runs/h11.json --sheets runs/h11sheets --labeled runs/h11
"""
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402

default = get_recipe("lucid_steep_std")
rs.CANDIDATES["std_decay175"] = Variant(
    "lucid_steep_std with the Fourier step scale 1/f^1.75 (decay_power 1.75)",
    replace(default, stage=replace(default.stage, decay_power=1.75)))
sys.exit(rs.main(sys.argv[1:]))
