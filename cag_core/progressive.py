"""Progressive generation: initial noise, upsampling between stages, and the whole 32 -> 64 -> 128 -> 256 run.

An image is fully determined by its key and the recipe: its noise, every MAE mask and every random
view come from CPU generators seeded from its key (streams.py), `(seed, index)` by default, so the
same inputs give the same images (on CPU, bit for bit), and image i of a batch is image i
generated alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .classifier import Classifier, Ensemble, as_ensemble
from .errors import CaGError, report_out_of_memory
from .optimize import DEFAULT_BN_EVERY, DEFAULT_IMAGE_STD, Callback, OptimizeConfig, Reconstructor, optimize
from .regions import composite, mask_for_images
from .streams import NOISE, ImageStreams, Key, stage_purpose
from .targets import Target, parse_target

NOISE_KINDS = ("uniform", "gaussian", "gray")
UPSAMPLE_METHODS = ("bicubic", "bilinear", "nearest")
MAX_SIDE = 2048  # a side larger than this is almost surely a typo, and would exhaust memory


def check_size(height: int, width: int, what: str = "Image size") -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise CaGError(f"{what} must be between 1 and {MAX_SIDE} per side, got {width}x{height}.")


def init_noise(
    streams: ImageStreams,
    height: int,
    width: int,
    kind: str = "uniform",
    *,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """[len(streams), 3, height, width] in [0, 1], image i from stream i; drawn on the CPU so a
    seed means the same on any device.

    uniform: U(0, 1) per pixel. gaussian: N(0.5, 0.25) clamped. gray: 0.5 with N(0, 0.01) noise,
    Lucid's starting point (a near-blank image lets the classifier's gradient set the layout).
    """
    check_size(height, width)
    shape = (3, height, width)
    if kind == "uniform":
        noise = streams.rand(*shape)
    elif kind == "gaussian":
        noise = (0.5 + 0.25 * streams.randn(*shape)).clamp(0, 1)
    elif kind == "gray":
        noise = (0.5 + 0.01 * streams.randn(*shape)).clamp(0, 1)
    else:
        raise CaGError(f"Unknown noise '{kind}'. Allowed: {', '.join(NOISE_KINDS)}.")
    return noise.to(device)


def noise_streams(seed: int, batch: int) -> ImageStreams:
    """The start-noise streams of images 0..batch-1 for `seed` (what CaG Init Noise draws)."""
    if batch < 1:
        raise CaGError(f"Batch size must be at least 1, got {batch}.")
    return ImageStreams.for_batch(seed, batch, (NOISE,))


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
    # Recipe lucid_steep_std (README, defaults table): a 32 px stage lays out fewer, larger shapes first.
    sizes: tuple[int, ...] = (32, 64, 128, 256)  # square side of each stage
    steps: tuple[int, ...] = (50, 50, 100, 100)  # steps per stage (one value is repeated)
    noise: str = "gray"
    upsample_method: str = "bicubic"
    # everything but `steps`; the default recipe's BN schedule and contrast are not OptimizeConfig's own
    stage: OptimizeConfig = OptimizeConfig(bn_every=DEFAULT_BN_EVERY, image_std=DEFAULT_IMAGE_STD)
    # View noise std per stage (one value is repeated), overriding stage.augment.noise; () = that
    # value in every stage. (0.3, 0.3, 0.3, 0) is recipe lucid_sharp_finish: noise where the layout
    # is made, clean views for the last stage's detail.
    view_noise: tuple[float, ...] = ()

    def stage_configs(self) -> list[OptimizeConfig]:
        stages = len(self.sizes)
        steps = self.steps * stages if len(self.steps) == 1 else self.steps
        if len(steps) != stages or not self.sizes:
            raise CaGError(f"Give one steps value or one per stage: {stages} stages, {len(self.steps)} steps.")
        noises = self.view_noise or (self.stage.augment.noise,)
        noises = noises * stages if len(noises) == 1 else noises
        if len(noises) != stages:
            raise CaGError(f"Give one view noise value or one per stage: {stages} stages, {len(self.view_noise)} values.")
        return [replace(self.stage, steps=s, augment=replace(self.stage.augment, noise=float(n)))
                for s, n in zip(steps, noises)]


@dataclass
class GenerateResult:
    images: torch.Tensor  # [B, 3, H, W] at the last size
    stage_losses: list[list[float]]  # per stage, the mean loss over the images at every step
    labels: tuple[str, ...]
    image_losses: list[float] = field(default_factory=list)  # each image's loss at the last step run


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
    keys: Sequence[Key] | None = None,
    init: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> GenerateResult:
    """Noise -> optimize at sizes[0] -> upsample -> optimize at sizes[1] -> ...

    keys: one key per image naming its random streams (default `(seed, i)` for image i); an
        image's noise is drawn from `(*key, "noise")` and the stage at size S from
        `(*key, "optimize", S, S)`, exactly what CaG Init Noise and CaG Optimize draw with that
        seed, so a workflow and this function give the same images.
    init: start from this picture ([1 or B, 3, H, W] in [0, 1]) instead of noise. The last stage
        is then the picture's own size and the earlier ones scale it by sizes[i] / sizes[-1]
        (32 -> 64 -> 128 -> 256 on a 300x450 photo: 38x56, 75x112, 150x225, 300x450).
    mask: with `init`, only this region may change (regions.py: 1 = may change); every stage
        starts from the picture at its size where the mask is 0, so the result keeps the
        picture's own pixels there. `fill_masked` of the stage config applies to the first stage.
    callback(stage, stages, step, steps, images, loss) is called every step; True stops the run.
    """
    ensemble = as_ensemble(classifier)
    device = torch.device(device) if device is not None else ensemble.members[0].device
    stage_configs = config.stage_configs()
    if keys is None:
        keys = [(int(seed), i) for i in range(batch)]
    keys = [tuple(k) for k in keys]
    if len(keys) != batch:
        raise CaGError(f"generate got {len(keys)} image keys for a batch of {batch}.")
    if isinstance(target, str):
        target = parse_target(target, ensemble.class_names, batch)
    if mask is not None and init is None:
        raise CaGError("A mask needs a start picture (init): it says which of its pixels may change.")
    if init is None:
        sides = [(s, s) for s in config.sizes]
        images = init_noise(ImageStreams.derived(keys, (NOISE,)), *sides[0], config.noise, device=device)
    else:
        init = _batch_of(init, batch).to(device)
        sides = stage_sides(tuple(init.shape[-2:]), config.sizes)
        images = init
    stage_losses: list[list[float]] = []
    image_losses: list[float] = []
    for stage, ((h, w), stage_config) in enumerate(zip(sides, stage_configs)):
        if stage:  # later stages refine what the earlier ones made of the masked region
            stage_config = replace(stage_config, fill_masked=False)
        images = upsample(images, h, w, config.upsample_method)
        if mask is not None:  # the kept region: the picture itself at this size, not an upsampled copy
            images = composite(images, upsample(init, h, w, config.upsample_method), mask_for_images(mask, batch, h, w)
                               .to(device))
        stage_callback: Callback | None = None
        if callback is not None:
            stage_callback = _bind_stage(callback, stage, len(config.sizes))
        with report_out_of_memory(batch, (h, w), device):
            result = optimize(
                images, ensemble, target, config=stage_config, mae=mae,
                streams=ImageStreams.derived(keys, stage_purpose(h, w)), callback=stage_callback, mask=mask,
            )
        images = result.images
        stage_losses.append(result.losses)
        image_losses = result.image_losses
        if result.stopped_early:
            break
    return GenerateResult(images, stage_losses, target.labels, image_losses)


def _batch_of(init: torch.Tensor, batch: int) -> torch.Tensor:
    if init.dim() != 4 or init.shape[1] != 3 or init.shape[0] not in (1, batch):
        raise CaGError(f"The start picture must be [1 or {batch}, 3, height, width], got {tuple(init.shape)}.")
    check_size(*init.shape[-2:], "The start picture")
    return init.float().clamp(0, 1).expand(batch, -1, -1, -1)


def stage_sides(final: tuple[int, int], sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(height, width) of each stage for a picture of size `final`: scaled by sizes[i] / sizes[-1]."""
    h, w = final
    return [(max(1, round(h * s / sizes[-1])), max(1, round(w * s / sizes[-1]))) for s in sizes]


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
