"""Progressive generation: initial noise, upsampling between stages, and the whole 64 -> 128 -> 256 run.

A run is fully determined by its seed: the noise, every MAE mask and every random view come from
one CPU `torch.Generator`, so the same inputs give the same images (on CPU, bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .classifier import Classifier, Ensemble, as_ensemble
from .errors import CaGError, report_out_of_memory
from .optimize import Callback, OptimizeConfig, Reconstructor, optimize
from .targets import Target, parse_target

NOISE_KINDS = ("uniform", "gaussian", "gray")
UPSAMPLE_METHODS = ("bicubic", "bilinear", "nearest")
MAX_SIDE = 2048  # a side larger than this is almost surely a typo, and would exhaust memory


def check_size(height: int, width: int, what: str = "Image size") -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise CaGError(f"{what} must be between 1 and {MAX_SIDE} per side, got {width}x{height}.")


def init_noise(
    batch: int,
    height: int,
    width: int,
    kind: str = "uniform",
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """[batch, 3, height, width] in [0, 1]; drawn on the CPU so a seed means the same on any device.

    uniform: U(0, 1) per pixel. gaussian: N(0.5, 0.25) clamped. gray: 0.5 with N(0, 0.01) noise,
    Lucid's starting point (a near-blank image lets the classifier's gradient set the layout).
    """
    check_size(height, width)
    if batch < 1:
        raise CaGError(f"Batch size must be at least 1, got {batch}.")
    shape = (batch, 3, height, width)
    if kind == "uniform":
        noise = torch.rand(shape, generator=generator)
    elif kind == "gaussian":
        noise = (0.5 + 0.25 * torch.randn(shape, generator=generator)).clamp(0, 1)
    elif kind == "gray":
        noise = (0.5 + 0.01 * torch.randn(shape, generator=generator)).clamp(0, 1)
    else:
        raise CaGError(f"Unknown noise '{kind}'. Allowed: {', '.join(NOISE_KINDS)}.")
    return noise.to(device)


def upsample(images01: torch.Tensor, height: int, width: int, method: str = "bicubic") -> torch.Tensor:
    """Resize [B, 3, H, W] to (height, width), clamped to [0, 1] (bicubic overshoots)."""
    check_size(height, width, "Upsample size")
    if method not in UPSAMPLE_METHODS:
        raise CaGError(f"Unknown upsample method '{method}'. Allowed: {', '.join(UPSAMPLE_METHODS)}.")
    if tuple(images01.shape[-2:]) == (height, width):
        return images01
    kwargs = {} if method == "nearest" else {"align_corners": False}
    # Antialias only matters when shrinking; it keeps a downscale from aliasing.
    shrinking = height < images01.shape[-2] or width < images01.shape[-1]
    if method != "nearest":
        kwargs["antialias"] = shrinking
    return F.interpolate(images01, size=(height, width), mode=method, **kwargs).clamp(0, 1)


@dataclass(frozen=True)
class ProgressiveConfig:
    sizes: tuple[int, ...] = (64, 128, 256)  # square side of each stage
    steps: tuple[int, ...] = (100, 100, 100)  # steps per stage (one value is repeated)
    noise: str = "gray"
    upsample_method: str = "bicubic"
    stage: OptimizeConfig = OptimizeConfig()  # everything but `steps`

    def stage_configs(self) -> list[OptimizeConfig]:
        steps = self.steps * len(self.sizes) if len(self.steps) == 1 else self.steps
        if len(steps) != len(self.sizes) or not self.sizes:
            raise CaGError(f"Give one steps value or one per stage: {len(self.sizes)} stages, {len(self.steps)} steps.")
        return [replace(self.stage, steps=s) for s in steps]


@dataclass
class GenerateResult:
    images: torch.Tensor  # [B, 3, H, W] at the last size
    stage_losses: list[list[float]]
    labels: tuple[str, ...]


StageCallback = Callable[[int, int, int, int, torch.Tensor, float], bool | None]


def generate(
    classifier: Classifier | Ensemble,
    target: Target | str,
    *,
    batch: int = 1,
    seed: int = 0,
    config: ProgressiveConfig = ProgressiveConfig(),
    mae: Reconstructor | None = None,
    device: str | torch.device | None = None,
    callback: StageCallback | None = None,
) -> GenerateResult:
    """Noise -> optimize at sizes[0] -> upsample -> optimize at sizes[1] -> ...

    callback(stage, stages, step, steps, images, loss) is called every step; True stops the run.
    """
    ensemble = as_ensemble(classifier)
    device = torch.device(device) if device is not None else ensemble.members[0].device
    stage_configs = config.stage_configs()
    if isinstance(target, str):
        target = parse_target(target, ensemble.class_names, batch)
    generator = torch.Generator().manual_seed(int(seed))
    images = init_noise(batch, config.sizes[0], config.sizes[0], config.noise, generator=generator, device=device)
    stage_losses: list[list[float]] = []
    for stage, (size, stage_config) in enumerate(zip(config.sizes, stage_configs)):
        images = upsample(images, size, size, config.upsample_method)
        stage_callback: Callback | None = None
        if callback is not None:
            stage_callback = _bind_stage(callback, stage, len(config.sizes))
        with report_out_of_memory(batch, (size, size), device):
            result = optimize(
                images, ensemble, target, config=stage_config, mae=mae, generator=generator, callback=stage_callback
            )
        images = result.images
        stage_losses.append(result.losses)
        if result.stopped_early:
            break
    return GenerateResult(images, stage_losses, target.labels)


def _bind_stage(callback: StageCallback, stage: int, stages: int) -> Callback:
    def inner(step: int, total: int, images: torch.Tensor, loss: float):
        return callback(stage, stages, step, total, images, loss)

    return inner


def stage_sizes(final: int, stages: int) -> tuple[int, ...]:
    """Sides that double up to `final`: (64, 128, 256) for final=256, stages=3."""
    if stages < 1:
        raise CaGError(f"stages must be at least 1, got {stages}.")
    sizes = [max(8, final // 2 ** (stages - 1 - i)) for i in range(stages)]
    return tuple(sizes)


def generate_images(classifier: Classifier | Ensemble, target: Target | str, sizes: Sequence[int], **kwargs) -> torch.Tensor:
    """Shortcut returning only the images."""
    config = kwargs.pop("config", ProgressiveConfig())
    config = replace(config, sizes=tuple(sizes))
    return generate(classifier, target, config=config, **kwargs).images
