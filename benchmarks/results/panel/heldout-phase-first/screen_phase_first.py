"""The run of this panel: benchmarks.recipe_search with one more candidate, the default with its two
layout stages (32 and 64 px) in MACO's parameterization (a natural image's Fourier magnitudes held
fixed, the phases and mean colour optimized, lr 0.2), the 128 and 256 px stages in Lucid's Fourier
parameterization as the default. The engine hands each stage the pixels of the one before, so a
stage can use any parameterization; recipe_search has no such candidate, so this adds it in its own
process.

    python benchmarks/results/panel/heldout-phase-first/screen_phase_first.py --rerun-held-out \
        --classes 18,57,64,108,128,182,209,222,278,283,319,373,400,412,463,490,506,538,578,594,637,686,708,720,769,796,824,874,880,912,962,991 \
        --seeds 0 --variants steep_bn_alt_std36,std_phase_first --out runs/h15.json --sheets runs/h15sheets --labeled runs/h15
"""
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.progressive import ProgressiveConfig  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402


@dataclass(frozen=True)
class PhaseFirstConfig(ProgressiveConfig):
    """The stages in `phase_stages` in the phase parameterization at `phase_lr` (free contrast, the
    natural slope), the others as `stage` says."""
    phase_stages: tuple[int, ...] = ()
    phase_lr: float = 0.2

    def stage_configs(self):
        return [replace(c, parameterization="phase", lr=self.phase_lr, image_std=None, decay_power=None)
                if i in self.phase_stages else c for i, c in enumerate(super().stage_configs())]


default = get_recipe("lucid_steep_std")
fields = {f: getattr(default, f) for f in ("sizes", "steps", "noise", "upsample_method", "stage", "view_noise")}
rs.CANDIDATES["std_phase_first"] = Variant("lucid_steep_std, the 32 and 64 px stages in phase (lr 0.2)",
                                           PhaseFirstConfig(**fields, phase_stages=(0, 1)))
sys.exit(rs.main(sys.argv[1:]))
