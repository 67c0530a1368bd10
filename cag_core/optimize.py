"""The optimization step: images -> (MAE reconstruct) -> random views -> classifier(s) -> loss.

`optimize` runs N Adam steps on a parameterization of the images and returns the new images. It
does no I/O: progress, previews and cancellation go through `callback(step, total, images, loss)`,
which may return True to stop early (or raise, e.g. ComfyUI's interrupt, to abort). Hooks it adds
are removed in `finally`. It turns autograd on itself, so it works when called under ComfyUI's
`torch.inference_mode()`.

Each image is optimized on its own: its random numbers come from its own stream (streams.py), the
step minimizes the sum of per-image losses (so its gradient is that of its own loss), and Adam
works per coordinate. An image therefore comes out the same whatever batch it is in (on CPUs bit
for bit; see `_classify` for the one kernel choice that needed care), unless the diversity loss,
which compares the images of a batch, is on.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from typing import Callable, Optional, Protocol

import torch

from .augment import NO_AUGMENT, AugmentConfig, view_blurs, view_noises, view_thetas, views_from_thetas
from .classifier import Classifier, Ensemble, as_ensemble
from .cpu_linear import cpu_linear_mode
from .errors import CaGError, NonFiniteLossError
from .losses import BatchNormStats, diversity_loss, target_loss, total_variation
from .parameterization import PARAMETERIZATIONS, ContiguousGrad, parameterize
from .precast import weights_in_autocast_dtype
from .regions import anchor_loss, composite, feather, fill_from_surroundings, mask_for_images
from .step_graph import StepRunner, captures
from .streams import ImageStreams, stage_purpose
from .targets import Target, parse_target

# (step, total, images [B,3,H,W] detached in [0,1], loss) -> True to stop early
Callback = Callable[[int, int, torch.Tensor, float], Optional[bool]]

AUTOCAST_CHOICES = ("auto", "off", "bf16", "fp16")
OPTIMIZERS = ("adam", "adamw", "sgd")


class Reconstructor(Protocol):
    def sample_noise(self, batch: int, generator: torch.Generator | None) -> torch.Tensor: ...  # [batch, L]

    def reconstruct(
        self,
        images01: torch.Tensor,
        mask_ratio: float,
        generator: torch.Generator | None,
        paste_visible: bool,
        *,
        noise: torch.Tensor | None,
    ) -> torch.Tensor: ...


# The natural-statistics priors of the default (since 2026-12): each image's feature statistics at
# every BatchNorm layer pulled toward the classifier's training statistics, plus a little total
# variation. On the tuning classes they turned feature-visualization texture into scenes with
# photographic light and surfaces, with the independent judges agreeing as often or more
# (benchmarks/results/recipe_search/README.md); classifiers without BatchNorm are unaffected.
DEFAULT_BN_WEIGHT = 0.001
DEFAULT_TV_WEIGHT = 0.05
# The default recipe (lucid_steep_std, since the second session of 2026-12-07) measures the
# BN-statistics prior every other step at twice bn_weight (the same push on average: the prior is
# about a quarter of a two-thread CPU step) and fixes each image's contrast to a spread of 3.6 (the
# steep spectrum's free images reach 6-8 and clip 38-40 % of their values; a photo's is about 1.8).
# They are the defaults of ProgressiveConfig(), the command line and CaG Optimize; a bare
# OptimizeConfig() measures every step and leaves the contrast free, as the reference step
# (benchmarks/reference_step.py) and every recipe before lucid_steep_std do.
DEFAULT_BN_EVERY = 2
DEFAULT_IMAGE_STD = 3.6
MAX_BN_EVERY = 100
MAX_IMAGE_STD = 10.0
# The default fall-off of the Fourier parameterization's step scale, 1/f^1.5 instead of Lucid's 1/f
# (recipe lucid_steep, the default since 2026-12-07): the coarse frequencies move far faster than
# the fine ones, so the image is drawn in bold, whole shapes rather than class texture. On 16 fresh
# held-out classes blind viewers named 32 of 48 guesses against 9 with 1/f, photo score 2.52
# against 2.10, though 38 % of its values are clipped to black or white
# (benchmarks/results/recipe_search/README.md, "A steeper spectrum").
DEFAULT_DECAY_POWER = 1.5
MAX_DECAY_POWER = 3.0


@dataclass(frozen=True)
class OptimizeConfig:
    """One stage's settings; every default is explained in the README's defaults table."""

    steps: int = 100  # Adam steps in this stage
    lr: float = 0.05  # Lucid's rate for the Fourier parameterization; also good for pixels
    parameterization: str = "fourier"  # "fourier" (decorrelated, 1/f), "pixels" or "phase" (MACO)
    # How fast the spectrum falls, ~1/f^decay_power: fourier's step scale or phase's fixed magnitudes.
    # None = the parameterization's own: Lucid's 1 for fourier (every recipe before lucid_steep),
    # the photos' 1.35 for phase (parameterization.NATURAL_SLOPE).
    decay_power: float | None = DEFAULT_DECAY_POWER
    image_std: float | None = None  # fourier: fix each image's contrast to this (parameterization.fix_spread)
    focus: float | None = None  # fourier/phase: blur toward the border, sigma / side (parameterization.FocusBlur)
    chroma_decay: float = 0.0  # fourier: colour channels' fine frequencies move slower (parameterization._chroma_damping)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mask_ratio: float = 0.75  # MAE: fraction of patches masked, resampled every step
    paste_visible: bool = False  # MAE: keep the visible patches of the input in its output
    # A view whose target probability reaches this stops pulling (its cross-entropy is floored at
    # -log(p), no gradient): the image stops gaining class texture once it convinces. None = never.
    enough_p: float | None = None
    diversity_weight: float = 0.0  # distance-metric loss between images of the batch
    bn_weight: float = DEFAULT_BN_WEIGHT  # batch-norm statistics matching (DeepInversion), per image; 0 = off
    # Measure that prior every n-th step (0, n, 2n, ...) at n x bn_weight; a captured CUDA graph
    # replays one step, so there it is measured every step.
    bn_every: int = 1
    tv_weight: float = DEFAULT_TV_WEIGHT  # total variation; 0 = off
    anchor_weight: float = 0.0  # keep the result's 16x16 thumbnail near the start image's (regions.py); 0 = off
    feather: int = 0  # with a mask: px over which the mask ramps up inside its edge (regions.py)
    fill_masked: bool = False  # with a mask: start the masked region from its surroundings (regions.py)
    optimizer: str = "adam"
    autocast: str = "auto"  # "auto": bf16 on CUDA, fp32 on CPU
    view_size: int | None = None  # classifier input side for the views; None = its native size
    view_batch: int | None = None  # views per classifier forward; None = auto (see `views_per_forward`)
    # Opt-in speed-ups for GPUs (step_graph.py; not yet timed on one, benchmarks/README.md):
    cuda_graph: bool = False  # capture the whole step once and replay it (CUDA; elsewhere: no effect)
    compile: bool = False  # torch.compile the step's forward (image -> loss); rounding changes

    def __post_init__(self):
        if self.steps < 1:
            raise CaGError(f"steps must be at least 1, got {self.steps}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CaGError(f"lr must be a positive number, got {self.lr}.")
        if self.parameterization not in PARAMETERIZATIONS:
            raise CaGError(f"Unknown parameterization '{self.parameterization}'. Allowed: {', '.join(PARAMETERIZATIONS)}.")
        if self.image_std is not None and not (0 < self.image_std <= MAX_IMAGE_STD):
            raise CaGError(f"image_std must be in (0, {MAX_IMAGE_STD:g}] or None (free contrast), got {self.image_std}.")
        if self.decay_power is not None and not (0 <= self.decay_power <= MAX_DECAY_POWER):
            raise CaGError(f"decay_power must be between 0 and {MAX_DECAY_POWER:g} (Lucid: 1), got {self.decay_power}.")
        if not (math.isfinite(self.chroma_decay) and 0 <= self.chroma_decay <= 3):
            raise CaGError(f"chroma_decay must be between 0 and 3 (0 = off), got {self.chroma_decay}.")
        if self.focus is not None and not 0 < self.focus < 1:
            raise CaGError(f"focus (background blur, a fraction of the image side) must be in (0, 1) or None, got {self.focus}.")
        if self.enough_p is not None and not 0 < self.enough_p < 1:
            raise CaGError(f"enough_p must be a probability in (0, 1) or None (never stop pulling), got {self.enough_p}.")
        if not 0 <= self.mask_ratio < 1:
            raise CaGError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}.")
        for name in ("diversity_weight", "bn_weight", "tv_weight", "anchor_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise CaGError(f"{name} must be a non-negative number (0 = off), got {value}.")
        if isinstance(self.bn_every, bool) or not (isinstance(self.bn_every, int) and 1 <= self.bn_every <= MAX_BN_EVERY):
            raise CaGError(f"bn_every must be a whole number from 1 to {MAX_BN_EVERY} (1 = every step), got {self.bn_every!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise CaGError(f"Unknown optimizer '{self.optimizer}'. Allowed: {', '.join(OPTIMIZERS)}.")
        if self.autocast not in AUTOCAST_CHOICES:
            raise CaGError(f"Unknown autocast '{self.autocast}'. Allowed: {', '.join(AUTOCAST_CHOICES)}.")
        if self.view_size is not None and not 16 <= self.view_size <= 1024:
            raise CaGError(f"view_size must be between 16 and 1024, got {self.view_size}.")
        if not 0 <= self.feather <= 1024:
            raise CaGError(f"feather must be between 0 and 1024 px, got {self.feather}.")
        if self.view_batch is not None and self.view_batch < 1:
            raise CaGError(f"view_batch must be at least 1 (or None for automatic), got {self.view_batch}.")


@dataclass
class OptimizeResult:
    images: torch.Tensor  # [B, 3, H, W] in [0, 1], detached
    losses: list[float]  # loss per step: the mean over the images of each image's loss
    stopped_early: bool = False
    image_losses: list[float] = field(default_factory=list)  # each image's loss at the last step run


def autocast_dtype(device: torch.device, choice: str) -> torch.dtype | None:
    """The lower precision autocast runs in for `choice` on `device`; None = fp32."""
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if choice == "fp16" else torch.bfloat16


def _autocast(device: torch.device, choice: str):
    dtype = autocast_dtype(device, choice)
    if dtype is None:
        return contextlib.nullcontext()
    # No cast cache: it holds only casts of grad-requiring leaves, which the step never casts (the
    # image stays fp32, the frozen weights are cast once: precast.py), and a CUDA graph capture
    # must not keep cached tensors from outside it.
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)


@contextlib.contextmanager
def step_precision(device: torch.device, choice: str, onednn_linear: bool = True):
    """Around one step's forward: autocast as `choice` says, and fp32 CPU linear layers through
    oneDNN (cpu_linear.py) unless `onednn_linear` is False (inside torch.compile, which picks its
    own kernels)."""
    with _autocast(device, choice), (cpu_linear_mode(device) if onednn_linear else contextlib.nullcontext()):
        yield


def frozen_models(ensemble: Ensemble, mae: object | None) -> list[torch.nn.Module]:
    """The modules whose weights a run may cast once for autocast (precast.py)."""
    return list(ensemble.members) + ([mae] if isinstance(mae, torch.nn.Module) else [])


def _make_optimizer(name: str, params: list[torch.Tensor], lr: float, device: torch.device, capturable: bool = False):
    # capturable: Adam keeps its step count on the GPU, so a captured step advances it on replay.
    fused = {"fused": True, "capturable": capturable} if device.type == "cuda" else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, **fused)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def views_per_forward(config: OptimizeConfig, device: torch.device, ensemble: Ensemble) -> int | None:
    """How many views one classifier forward takes (None = all). `config.view_batch` if set; else
    all of them on accelerators, and on CPUs the views of one image. On a CPU, oneDNN and MKL pick
    kernels by shape, so the same view can come out a few ULP different in a forward of another
    size (seen with SE blocks and with batches of one): one image's views per forward keeps every
    shape the same whatever the batch, so an image is bit for bit the same in any batch. It is
    also cache-sized: forward+backward per view at 224 px on 2 cores was fastest in chunks of
    about 4 views (EfficientNet-Lite0 35 ms in chunks of 4, 60 with 16 at once, 117 with 64).
    The BN-statistics loss is measured per image, so it chunks like the rest."""
    if config.view_batch is not None:
        return config.view_batch
    if device.type != "cpu":
        return None
    return config.augment.crops


def fast_classifier_path(device: torch.device, autocast: str) -> bool:
    """Whether classifiers run their BatchNorm-folded, channels_last copy (Classifier.folded_model):
    on the CPU in fp32, where it matched the plain model to fp32 rounding and made a Lite0 step
    2x faster. Not under bf16/fp16 or on CUDA: there, one EfficientNet-Lite0 step through the
    folded copy moved further from the reference (loss 1-5 %) than the reference's own bf16 run
    did, on an H200 (benchmarks/README.md)."""
    return device.type == "cpu" and autocast in ("auto", "off")


def _runs_fast(config: OptimizeConfig, device: torch.device) -> bool:
    # torch.compile traces the plain model (the folded copy is built lazily, outside its graph).
    return not config.compile and fast_classifier_path(device, config.autocast)


def step_bn_stats(config: OptimizeConfig, ensemble: Ensemble, device: torch.device) -> BatchNormStats | None:
    """The BN-statistics collector of a step (None when the prior is off), hooked on the networks
    the step runs on `device` (folded copies or originals); use it as a context manager around the
    step's forwards."""
    if config.bn_weight <= 0:
        return None
    fast = _runs_fast(config, device)
    every = 1 if captures(device, config.cuda_graph) else config.bn_every  # a graph replays one step
    return BatchNormStats([member.model_for(fast) for member in ensemble.members], config.augment.crops, every)


# Eager steps before a CUDA graph capture (PyTorch's recipe uses a few; this step has no
# collectives, so 3 are enough to set up cuDNN/cuFFT plans and Adam's state).
GRAPH_WARMUP_STEPS = 3


def defer_loss_read(device: torch.device) -> bool:
    """On a GPU, reading the loss waits for the step to finish, so the CPU could not queue the next
    step meanwhile. There the loss (NaN check, callback) is read one step late, after the next
    step is queued; a stop request then lands one step late. CPUs read at once."""
    return device.type != "cpu"


def image_parameterization(images01: torch.Tensor, config: OptimizeConfig):
    """The parameterization of `images01` that a stage with `config` steps (its kind, spectrum
    fall-off, contrast, focus and colour damping); the speed checks build theirs here too."""
    return parameterize(
        images01, config.parameterization, config.decay_power, config.image_std, config.focus, config.chroma_decay
    )


def check_devices(images: torch.Tensor, ensemble: Ensemble, mae: object | None) -> torch.device:
    """All models must sit on the images' device; say which one does not."""
    device = images.device
    for member in ensemble.members:
        if member.device != device:
            raise CaGError(
                f"Classifier '{member.name}' is on {member.device} but the images are on {device}: "
                "load both on the same device."
            )
    if mae is not None:
        mae_device = next(mae.parameters()).device  # type: ignore[attr-defined]
        if mae_device != device:
            raise CaGError(f"The MAE is on {mae_device} but the images are on {device}: load both on the same device.")
    return device


def optimize(
    images01: torch.Tensor,
    classifier: Classifier | Ensemble,
    target: Target | str,
    *,
    config: OptimizeConfig = OptimizeConfig(),
    mae: Reconstructor | None = None,
    seed: int = 0,
    streams: ImageStreams | None = None,
    callback: Callback | None = None,
    mask: torch.Tensor | None = None,
) -> OptimizeResult:
    """Run `config.steps` steps moving `images01` toward `target` (see module docstring).

    images01: [B, 3, H, W] in [0, 1]; never modified in place.
    target: a parsed `Target` or target text (class names / indices / weighted mix).
    seed: seeds image i's stream of masks and views with the key (seed, i, "optimize", H, W), as
        CaG Optimize does; ignored when `streams` is given.
    streams: one random stream per image for its masks and views (streams.py); the same keys give
        the same images.
    mask: which pixels may change (1) and which stay exactly as in `images01` (0), [H, W],
        [B, H, W] or [B, 1, H, W], resized to the images (regions.py); None = all may change.
    """
    ensemble = as_ensemble(classifier)
    if images01.dim() != 4 or images01.shape[1] != 3:
        raise CaGError(f"Images must be [batch, 3, height, width], got shape {tuple(images01.shape)}.")
    batch = images01.shape[0]
    device = check_devices(images01, ensemble, mae)
    if isinstance(target, str):
        target = parse_target(target, ensemble.class_names, batch)
    if target.positive.shape != (batch, ensemble.num_classes):
        raise CaGError(
            f"The target is for {target.positive.shape[0]} images x {target.positive.shape[1]} classes, "
            f"but there are {batch} images and {ensemble.num_classes} classes."
        )
    target = target.to(device)
    if streams is None:
        streams = ImageStreams.for_batch(seed, batch, stage_purpose(*images01.shape[-2:]))
    if len(streams) != batch:
        raise CaGError(f"optimize got {len(streams)} random streams for {batch} images; give one per image.")
    first = ensemble.members[0]
    view_size = (config.view_size, config.view_size) if config.view_size else first.input_size
    views = config.augment.crops

    with torch.inference_mode(False), torch.enable_grad():
        # Inputs may be inference tensors (ComfyUI): the parameterization and the region copy them.
        region = _region(images01, mask, config.feather) if mask is not None or config.anchor_weight > 0 else None
        start = images01.detach().clone()
        if config.fill_masked and region is not None and region[1] is not None:
            start = fill_from_surroundings(start.float(), region[1])
        image_fn = image_parameterization(start, config)
        optimizer = _make_optimizer(
            config.optimizer, image_fn.params, config.lr, device, capturable=captures(device, config.cuda_graph)
        )
        bn_stats = step_bn_stats(config, ensemble, device)
        chunk = views_per_forward(config, device, ensemble)
        forward = compiled_step_forward() if config.compile else step_forward
        losses: list[float] = []
        defer = defer_loss_read(device)
        pending: tuple[int, torch.Tensor | None, torch.Tensor] | None = None

        def step_fn(*randoms: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            optimizer.zero_grad(set_to_none=True)
            images, image_losses = forward(
                image_fn, ensemble, target, mae, config, view_size, views, bn_stats, chunk,
                StepRandoms(*randoms), region,
            )
            image_losses.sum().backward()  # each image's gradient is that of its own loss
            optimizer.step()
            image_fn.after_step()
            return images, image_losses

        runner = StepRunner(step_fn, device, static=config.cuda_graph, warmup=GRAPH_WARMUP_STEPS)

        last_image_losses: list[float] = []

        def report(step: int, images: torch.Tensor | None, image_losses: torch.Tensor) -> bool:
            values = image_losses.detach().float().cpu().tolist()  # one read of the device
            loss_value = sum(values) / len(values)
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"The loss became {loss_value} at step {step + 1} of {config.steps}; no image is returned. "
                    "Lower lr or the loss weights, or use autocast 'off'."
                )
            losses.append(loss_value)
            last_image_losses[:] = values
            return bool(callback is not None and callback(step + 1, config.steps, images, loss_value))

        stopped = False
        try:
            with (
                bn_stats if bn_stats is not None else contextlib.nullcontext(),
                weights_in_autocast_dtype(frozen_models(ensemble, mae), autocast_dtype(device, config.autocast)),
            ):
                for step in range(config.steps):
                    randoms = draw_step_randoms(mae, config, streams)
                    images, loss = runner(*randoms.tensors())
                    done = (step, runner.keep(images) if callback is not None else None, runner.keep(loss))
                    if defer:  # report the previous step, now that this one is queued
                        done, pending = pending, done
                    if done is not None and report(*done):
                        stopped = True
                        break
                if pending is not None and not stopped:
                    stopped = report(*pending)
        finally:
            runner.close()
        with torch.no_grad():
            final = image_fn().detach().float()
            if region is not None and region[1] is not None:
                final = composite(final, *region)
            final = final.clamp(0, 1)
    return OptimizeResult(final, losses, stopped, list(last_image_losses))


@dataclass(frozen=True)
class StepRandoms:
    """One step's random numbers. Drawn on the CPU from each image's stream, MAE mask noise first,
    then the view matrices, blur sigmas and noise draws, so a seed gives the same images on every
    device, captured or not."""

    noise: torch.Tensor | None  # [B, L] MAE masking noise; None without an MAE or without masking
    thetas: torch.Tensor | None  # [B * crops, 2, 3] view matrices; None without augmentation
    blurs: torch.Tensor | None = None  # [B * crops] view blur sigmas; None unless augment.blur
    view_noise: torch.Tensor | None = None  # [B * crops, 3] view noise draws; None unless augment.noise

    def tensors(self) -> list[torch.Tensor | None]:
        """Every field in order (a StepRunner's inputs; StepRandoms(*tensors) rebuilds it)."""
        return [getattr(self, f.name) for f in fields(self)]


def draw_step_randoms(mae: Reconstructor | None, config: OptimizeConfig, streams: ImageStreams) -> StepRandoms:
    noise = None
    if mae is not None and config.mask_ratio > 0:
        noise = torch.cat([mae.sample_noise(1, generator) for generator in streams.generators])
    if config.augment == NO_AUGMENT:
        return StepRandoms(noise, None)
    augment = config.augment  # each draw follows the one before it in every image's stream
    return StepRandoms(noise, view_thetas(augment, streams), view_blurs(augment, streams),
                       view_noises(augment, streams))


def step_forward(
    image_fn,
    ensemble: Ensemble,
    target: Target,
    mae: Reconstructor | None,
    config: OptimizeConfig,
    view_size: tuple[int, int],
    views: int,
    bn_stats: BatchNormStats | None,
    chunk: int | None,
    randoms: StepRandoms,
    region: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, per-image losses [B]) of one step: the part of the step that `compile` hands to
    torch.compile. region: (start images, mask [B, 1, H, W] or None); with a mask the step sees
    and returns the composite (regions.py); the start images are what the anchor compares to."""
    # The image stays fp32 outside autocast: in bf16 its colour mixing and sigmoid lose precision
    # for nothing (tiny ops), and one step's gradient moved further from fp32's.
    images = ContiguousGrad.apply(image_fn())
    if region is not None and region[1] is not None:
        images = composite(images, *region)
    start = region[0] if region is not None else None
    with step_precision(images.device, config.autocast, onednn_linear=not config.compile):
        loss = _step_loss(images, ensemble, target, mae, config, view_size, views, bn_stats, chunk, randoms, start)
    return images, loss


_COMPILED_FORWARD = None


def compiled_step_forward():
    """`step_forward` through torch.compile, built once per process (dynamo then caches one graph
    per shape and model set). dynamic=False: each stage size is its own static graph, rather than
    a slower symbolic one after the second size."""
    global _COMPILED_FORWARD
    if _COMPILED_FORWARD is None:
        _COMPILED_FORWARD = torch.compile(step_forward, dynamic=False)
    return _COMPILED_FORWARD


def _step_loss(
    images: torch.Tensor,
    ensemble: Ensemble,
    target: Target,
    mae: Reconstructor | None,
    config: OptimizeConfig,
    view_size: tuple[int, int],
    views: int,
    bn_stats: BatchNormStats | None,
    chunk: int | None,
    randoms: StepRandoms,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B]: each image's loss in this step, with its random numbers drawn beforehand
    (`draw_step_randoms`). The diversity term, which compares the images of a batch, is added to
    every image's loss in full: the sum keeps its weight relative to the per-image terms what it
    was when the step minimized the mean. The BN-statistics prior is each image's own."""
    batch = images.shape[0]
    source = images
    if mae is not None:
        source = mae.reconstruct(images, config.mask_ratio, None, config.paste_visible, noise=randoms.noise)
    crops = views_from_thetas(source, view_size, config.augment, randoms.thetas, randoms.blurs, randoms.view_noise)
    losses = images.new_zeros(batch, dtype=torch.float32)
    total_weight = sum(ensemble.weights)
    fast = _runs_fast(config, images.device)
    floor = -math.log(config.enough_p) if config.enough_p is not None else 0.0  # enough_p as a cross-entropy
    for member, weight in zip(ensemble.members, ensemble.weights):
        logits, features = _classify(member, crops, chunk, views, fast=fast, bn_stats=bn_stats)
        member_losses = target_loss(logits, target, views, floor)
        if config.diversity_weight > 0:
            member_losses = member_losses + config.diversity_weight * diversity_loss(features, batch, views)
        losses = losses + (weight / total_weight) * member_losses
    if bn_stats is not None:
        bn_loss = bn_stats.take(batch)
        if bn_loss is not None:
            losses = losses + config.bn_weight * bn_loss
    if config.tv_weight > 0:
        losses = losses + config.tv_weight * total_variation(images.float())
    if config.anchor_weight > 0:
        if start is None:
            raise CaGError("anchor_weight needs the start images (the step's region).")
        losses = losses + config.anchor_weight * anchor_loss(images, start)
    return losses


def _region(images01: torch.Tensor, mask: torch.Tensor | None, feather_px: int):
    """(start images, mask [B, 1, H, W] or None, on the images' device), fixed for the stage."""
    batch, _, h, w = images01.shape
    start = images01.detach().float().clamp(0, 1).clone()  # a copy: inputs may be inference tensors
    if mask is None:
        return start, None
    full = mask_for_images(mask, batch, h, w)
    soft = feather(full, feather_px)
    if not bool((soft > 0).flatten(1).any(1).all()):
        raise CaGError(f"feather {feather_px} px leaves nothing of the mask (it is narrower than twice that): "
                       "lower feather.")
    return start, soft.to(images01.device)


def _classify(
    member: Classifier, crops: torch.Tensor, chunk: int | None, views: int, fast: bool = False,
    bn_stats: BatchNormStats | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`member.logits_and_features(crops)` in forwards of about `chunk` views (None: all at once),
    rounded to whole images so that an image's views always share a forward."""
    if chunk is not None:
        chunk = max(1, chunk // views) * views
    if chunk is None or crops.shape[0] <= chunk:
        return _forward(member, crops, fast, bn_stats)
    parts = [_forward(member, part, fast, bn_stats) for part in crops.split(chunk)]
    return torch.cat([logits for logits, _ in parts]), torch.cat([features for _, features in parts])


def _forward(
    member: Classifier, crops: torch.Tensor, fast: bool, bn_stats: BatchNormStats | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    # oneDNN runs a batch of one with other convolution kernels: the logits of one view alone
    # differed in the last bits from the same view beside others (Lite0, ResNet-50; batches of 2
    # and more agreed bit for bit), which would make an image depend on its batch. A lone view
    # runs as a pair with itself; the copy's zero gradient adds exactly nothing.
    pair = crops.shape[0] == 1 and crops.device.type == "cpu"
    logits, features = member.logits_and_features(torch.cat([crops, crops]) if pair else crops, fast=fast)
    if bn_stats is not None:
        bn_stats.end_forward(keep=1 if pair else None)
    return (logits[:1], features[:1]) if pair else (logits, features)
