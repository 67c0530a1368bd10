"""The screening run of this panel, as it ran: benchmarks.recipe_search with two candidates the
engine had no option for yet, made by patching it in this process only.

- steep_bn_alt: the BN prior measured in steps 0, 2, 4, ... at twice the weight (bn_weight marked
  0.0020000001 so the patched collector could tell it apart). The engine's `bn_every=2` (added
  after this screen) does the same with bn_weight 0.001 x 2: the same schedule, images equal up to
  that last-digit difference in the weight.
- steep_bn_early: the BN prior in the 32, 64 and 128 px stages only, none at 256 px.
- steep_nobn, steep_std24, steep_std36 are plain configs (recipe_search has them now).

    python benchmarks/results/panel/tuning2-bn-schedule/screen_hacks.py --classes tuning2 --seeds 0 \
        --variants lucid_steep,steep_bn_alt,steep_bn_early,steep_nobn --labeled runs/t2
"""
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root
import benchmarks.recipe_search as rs  # noqa: E402
from benchmarks.quality import Variant  # noqa: E402
from cag_core import optimize as opt  # noqa: E402
from cag_core.losses import BatchNormStats  # noqa: E402
from cag_core.progressive import ProgressiveConfig  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402

ALT_MARK = 0.0020000001  # bn_weight marking 'every other step at twice the weight'


class AltStats(BatchNormStats):
    """Measures the steps whose `take` count is even (0, 2, 4, ...)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls, self.active = 0, True

    def _hook(self, index, on_input):
        inner = super()._hook(index, on_input)

        def hook(m, i, o):
            if self.active:
                inner(m, i, o)
        return hook

    def take(self, batch):
        out = super().take(batch)
        self.calls += 1
        self.active = self.calls % 2 == 0
        return out


_step_bn_stats = opt.step_bn_stats


def step_bn_stats(config, ensemble, device):
    if config.bn_weight == ALT_MARK:
        fast = opt._runs_fast(config, device)
        return AltStats([m.model_for(fast) for m in ensemble.members], config.augment.crops)
    return _step_bn_stats(config, ensemble, device)


opt.step_bn_stats = step_bn_stats


@dataclass(frozen=True)
class EarlyBN(ProgressiveConfig):
    """The last stage without the BN prior."""

    def stage_configs(self):
        stages = super().stage_configs()
        return stages[:-1] + [replace(stages[-1], bn_weight=0.0)]


steep = get_recipe("lucid_steep")
rs.CANDIDATES["steep_bn_alt"] = Variant("lucid_steep, BN prior every other step at twice the weight",
                                        replace(steep, stage=replace(steep.stage, bn_weight=ALT_MARK)))
rs.CANDIDATES["steep_bn_early"] = Variant(
    "lucid_steep, BN prior at 32/64/128 px only",
    EarlyBN(**{f: getattr(steep, f) for f in ("sizes", "steps", "noise", "upsample_method", "stage", "view_noise")}))
sys.exit(rs.main(sys.argv[1:]))
