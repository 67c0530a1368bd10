"""The runs of "The layout stages in MACO's parameterization" (README.md here): benchmarks.recipe_search
with the pack's `phase` parameterization (MACO's: a natural image's Fourier magnitudes held fixed,
the phases and the mean colour optimized, lr 0.2, free contrast) in some stages of the default
`lucid_steep_std`, Lucid's Fourier parameterization in the others. The engine hands each stage the
pixels of the one before, so a stage can use any parameterization.

    python benchmarks/results/recipe_search/screen_phase_layout.py --classes 85,450,591,869 --seeds 0 \
        --variants steep_bn_alt_std36,std_phase,std_phase16,std_phase_last,std_phase_first,std_phase_last_lr05 \
        --out scr.json --sheets scrsheets --labeled scr
    python benchmarks/results/recipe_search/screen_phase_layout.py --classes 61,84,90,414,449,575,582,586 \
        --seeds 0 --variants steep_bn_alt_std36,std_phase_first,std_phase_first1 --out scr2.json --sheets scr2sheets --labeled scr2
"""
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core.progressive import ProgressiveConfig  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402


@dataclass(frozen=True)
class PhaseStagesConfig(ProgressiveConfig):
    """The stages in `phase_stages` in the phase parameterization at `phase_lr` (free contrast, the
    slope `phase_slope`, None = the natural 1.35), the others as `stage` says."""
    phase_stages: tuple[int, ...] = ()
    phase_lr: float = 0.2
    phase_slope: float | None = None

    def stage_configs(self):
        return [replace(c, parameterization="phase", lr=self.phase_lr, image_std=None, decay_power=self.phase_slope)
                if i in self.phase_stages else c for i, c in enumerate(super().stage_configs())]


default = get_recipe("lucid_steep_std")
fields = {f: getattr(default, f) for f in ("sizes", "steps", "noise", "upsample_method", "stage", "view_noise")}
for name, description, stages, lr, slope in (
    ("std_phase", "every stage in phase (lr 0.2)", (0, 1, 2, 3), 0.2, None),
    ("std_phase16", "every stage in phase (lr 0.2), slope 1.6 (MACO's ImageNet spectrum)", (0, 1, 2, 3), 0.2, 1.6),
    ("std_phase_last", "the 256 px stage in phase (lr 0.2)", (3,), 0.2, None),
    ("std_phase_last_lr05", "the 256 px stage in phase (lr 0.05)", (3,), 0.05, None),
    ("std_phase_first", "the 32 and 64 px stages in phase (lr 0.2)", (0, 1), 0.2, None),
    ("std_phase_first1", "the 32 px stage in phase (lr 0.2)", (0,), 0.2, None),
):
    rs.CANDIDATES[name] = Variant(f"lucid_steep_std, {description}",
                                  PhaseStagesConfig(**fields, phase_stages=stages, phase_lr=lr, phase_slope=slope))
sys.exit(rs.main(sys.argv[1:]))
