"""The screening run of this panel: benchmarks.recipe_search with a candidate the engine has no
option for (one crop range per stage), made by overriding `stage_configs` in this process only.

- std_crop70_early: the default `lucid_steep_std` with crops of 70-100 % of the image area in the
  32 and 64 px stages (where the layout forms) and the default 25-100 % at 128 and 256 px.

    python benchmarks/results/panel/tuning2-early-crops/screen_early_crops.py --classes tuning2 --seeds 0 \
        --variants std_crop70_early --out runs/t2e.json --sheets runs/t2esheets --labeled runs/t2l
"""
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.progressive import ProgressiveConfig  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402

EARLY_STAGES = 2  # the 32 and 64 px stages
EARLY_CROP_SCALE = (0.7, 1.0)


@dataclass(frozen=True)
class EarlyLargeViews(ProgressiveConfig):
    """Large views while the layout forms, the default's crops for the detail."""

    def stage_configs(self):
        stages = super().stage_configs()
        return [replace(s, augment=replace(s.augment, crop_scale=EARLY_CROP_SCALE)) if k < EARLY_STAGES else s
                for k, s in enumerate(stages)]


default = get_recipe("lucid_steep_std")
rs.CANDIDATES["std_crop70_early"] = Variant(
    "lucid_steep_std, crops of 70-100 % at 32 and 64 px, 25-100 % at 128 and 256 px",
    EarlyLargeViews(**{f: getattr(default, f) for f in ("sizes", "steps", "noise", "upsample_method", "stage",
                                                         "view_noise")}))
sys.exit(rs.main(sys.argv[1:]))
