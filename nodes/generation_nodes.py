"""Nodes on the image path: starting noise, the optimization stage, and upsampling between stages."""

from __future__ import annotations

import logging
import math

import torch

from ..cag_core.augment import (DEFAULT_CENTER_STD, DEFAULT_CROP_SCALE, DEFAULT_VIEW_BLUR, DEFAULT_VIEW_NOISE, MAX_BLUR,
                                MAX_NOISE, AugmentConfig, center_std_or_uniform)
from ..cag_core.classifier import as_ensemble
from ..cag_core.errors import CaGError, NonFiniteLossError, report_out_of_memory
from ..cag_core.optimize import (DEFAULT_BN_EVERY, DEFAULT_BN_WEIGHT, DEFAULT_DECAY_POWER, DEFAULT_IMAGE_STD,
                                 DEFAULT_TV_WEIGHT, MAX_BN_EVERY, MAX_DECAY_POWER, MAX_IMAGE_STD, OptimizeConfig,
                                 optimize)
from ..cag_core.regions import check_mask_batch, composite, resize_mask
from ..cag_core.parameterization import NATURAL_SLOPE, PARAMETERIZATIONS
from ..cag_core.progressive import (
    MAX_SIDE, NOISE_KINDS, UPSAMPLE_METHODS, check_size, init_noise, noise_streams, upsample,
)
from ..cag_core.targets import parse_target, split_images, split_weight
from .common import (CATEGORY, CLASSIFIER, DEFAULT_CLASS, MAE, SEED_MAX, first_failure, imagenet_choices, range_result,
                     validation_result)
from .devices import module_device, move_module
from .images import check_image, comfy_to_engine, engine_to_comfy
from .progress import OptimizeProgress

MAX_BATCH = 64
MAX_STEPS = 10000
IMAGENET_CLASSES = 1000  # what the target_class list indexes
log = logging.getLogger(__name__)


def _seed_input(tooltip: str):
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True, "tooltip": tooltip})


def _check_batch(batch_size: int) -> None:
    if not 1 <= int(batch_size) <= MAX_BATCH:
        raise CaGError(f"batch_size must be between 1 and {MAX_BATCH}, got {batch_size}.")


class CaGInitNoise:
    DESCRIPTION = (
        "Makes the starting images of a generation: a batch of noise at the first stage's size "
        "(32x32 for the default 32 -> 64 -> 128 -> 256 schedule; 64x64 for the paper's 64 -> 128 -> 256)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Noise images; connect to CaG Optimize.",)
    FUNCTION = "make_noise"

    @classmethod
    def INPUT_TYPES(cls):
        side = {"min": 8, "max": MAX_SIDE, "step": 8}
        return {
            "required": {
                "width": ("INT", {"default": 32, **side, "tooltip": "Width of the first stage (progressive runs start small; "
                                  "the default recipe at 32)."}),
                "height": ("INT", {"default": 32, **side, "tooltip": "Height of the first stage."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip": "How many images to generate at once."}),
                "noise": (list(NOISE_KINDS), {
                    "default": "gray",
                    "tooltip": "gray: near-blank mid-gray (recommended; the classifier's gradient sets the layout). "
                    "uniform / gaussian: random pixels.",
                }),
                "seed": _seed_input("Seed of the noise. Image i of a batch is the same whatever the batch size."),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, batch_size):
        # Linked inputs arrive as None: only the values known now are checked.
        results = []
        if width is not None and height is not None:
            results.append(validation_result(lambda: check_size(int(height), int(width))))
        if batch_size is not None:
            results.append(validation_result(lambda: _check_batch(batch_size)))
        return first_failure(*results)

    def make_noise(self, width: int, height: int, batch_size: int, noise: str, seed: int):
        _check_batch(batch_size)
        # Image i comes from its own stream (seed, i): it is the same in a batch of any size.
        images = init_noise(noise_streams(int(seed), int(batch_size)), height, width, noise)
        return (engine_to_comfy(images),)


# --------------------------------------------------------------------------------------------


def check_target_grammar(text: str) -> None:
    """What can be checked without knowing the classifier: every line needs a positive weight."""
    for line in split_images(text):
        weights = [split_weight(entry)[1] for entry in line.split("|") if entry.strip()]
        if not any(w > 0 for w in weights):
            raise CaGError(f"Target line '{line}' has no class with a positive weight; add one, e.g. 'tabby:1 | {line}'.")


def choose_target(target_text: str, target_class: str, default_target: str | None) -> tuple[str, bool]:
    """(target text, came from the ImageNet combo): target_text, else the classifier's own
    default (text classifiers: their prompt), else the combo."""
    if target_text and target_text.strip():
        return target_text, False
    if default_target:
        return default_target, False
    return target_class, True


def loss_report(losses: list[float], label: str) -> str:
    if not losses:
        return f"{label}: no steps run"
    return f"{label}: loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps (best {min(losses):.4f})"


class CaGOptimize:
    DESCRIPTION = (
        "One stage of Classifier-as-Generator: optimizes the images so the classifier predicts the target, "
        "passing them through the MAE every step (if connected). Chain stages with CaG Upsample in between "
        "(32 -> 64 -> 128 -> 256). Shows a live preview and the loss while it runs; Cancel stops it within a step."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "loss_report")
    OUTPUT_TOOLTIPS = ("The optimized images.", "First and last loss of this stage, as text.")
    FUNCTION = "optimize_images"

    @classmethod
    def INPUT_TYPES(cls):
        def weight(tooltip, default=0.0):
            return ("FLOAT", {"default": default, "min": 0.0, "max": 100.0, "step": 0.001, "tooltip": tooltip})

        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to start from: CaG Init Noise, a previous stage, or any image."}),
                "classifier": (CLASSIFIER, {"tooltip": "The classifier (or ensemble) whose prediction is optimized."}),
                "target_class": (imagenet_choices(), {
                    "default": DEFAULT_CLASS,
                    "tooltip": "ImageNet class to generate (type to search). Ignored when target_text is set, "
                    "and for text classifiers, which generate their prompt.",
                }),
                "steps": ("INT", {"default": 100, "min": 1, "max": MAX_STEPS, "tooltip": "Optimization steps in this stage."}),
                "lr": ("FLOAT", {"default": 0.05, "min": 0.0001, "max": 10.0, "step": 0.001,
                                 "tooltip": "Adam learning rate; 0.05 suits the fourier parameterization."}),
                "crops": ("INT", {"default": 2, "min": 1, "max": 32,
                                  "tooltip": "Random crops/flips per image per step; more = steadier, slower."}),
                "parameterization": (list(PARAMETERIZATIONS), {
                    "default": "fourier",
                    "tooltip": "fourier: decorrelated 1/f spectrum, gives natural-looking images (recommended). "
                    "pixels: optimize the pixels directly.",
                }),
                "mask_ratio": ("FLOAT", {"default": 0.75, "min": 0.0, "max": 0.95, "step": 0.05,
                                         "tooltip": "Fraction of patches the MAE masks each step (only with an MAE)."}),
                "diversity_weight": weight("Push the images of a batch apart (0 = off)."),
                "bn_weight": weight("Match each image's batch-norm statistics to the classifier's training "
                                    "statistics, DeepInversion style: photographic light and surfaces instead of "
                                    f"texture ({DEFAULT_BN_WEIGHT} by default; 0 = off, the recipe before 2026-12-02; "
                                    "no effect on classifiers without batch norm).", DEFAULT_BN_WEIGHT),
                "tv_weight": weight(f"Total-variation smoothing ({DEFAULT_TV_WEIGHT} by default; 0 = off).",
                                    DEFAULT_TV_WEIGHT),
                "seed": _seed_input("Seed of the random masks and crops (per image: image i of a batch comes out as "
                                    "it would alone)."),
            },
            "optional": {
                "mae": (MAE, {"tooltip": "Masked Autoencoder that reconstructs the image every step (recommended)."}),
                "mask": ("MASK", {
                    "tooltip": "Only the masked region changes (1 = may change, 0 = kept exactly), e.g. from Load Image's "
                    "mask editor or Pad Image for Outpainting. Resized to the image if its size differs.",
                }),
                "feather": ("INT", {"default": 0, "min": 0, "max": 256, "step": 1,
                                    "tooltip": "With a mask: px over which the mask fades in inside its edge (a softer "
                                    "seam). Pixels outside the mask stay exact."}),
                "fill_masked": ("BOOLEAN", {"default": False,
                                            "tooltip": "With a mask: start the masked region from a smooth extension "
                                            "of the pixels around it instead of what it holds (e.g. the flat gray "
                                            "border of Pad Image for Outpainting)."}),
                "anchor_weight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000.0, "step": 0.5,
                                            "tooltip": "Keep the result close to the start image (its 16x16 colour "
                                            "layout): 0 = off; 10-100 keeps a photo's layout while the class changes "
                                            "(img2img)."}),
                "target_text": ("STRING", {
                    "multiline": True,
                    "default": "",
                    "tooltip": "Overrides target_class: class names or indices, a weighted mix 'tabby:0.7 | tiger cat:0.3', "
                    "negative weights to avoid a class, one line per image. Needed for non-ImageNet classifiers.",
                }),
                "crop_center_std": ("FLOAT", {
                    "default": DEFAULT_CENTER_STD, "min": 0.0, "max": 4.0, "step": 0.05,
                    "tooltip": "Where the random crops land: near the middle with this spread (0.4: the object comes "
                    "out whole and central more often); 0 = anywhere in the image (the recipe before 2026-12).",
                }),
                "crop_max": ("FLOAT", {
                    "default": DEFAULT_CROP_SCALE[1], "min": DEFAULT_CROP_SCALE[0], "max": 1.0, "step": 0.05,
                    "tooltip": "Largest random crop, as a fraction of the image area (the smallest is 0.25). Smaller "
                    "crops draw the object larger in the middle (recipe lucid_tight: 0.6 with crop_center_std 0.25, "
                    "bn_weight and tv_weight 0; people named it more often, other networks agreed less).",
                }),
                "view_blur": ("FLOAT", {
                    "default": DEFAULT_VIEW_BLUR, "min": 0.0, "max": MAX_BLUR, "step": 0.5,
                    "tooltip": "Blur each random view the classifier sees by up to this many pixels (Gaussian sigma): "
                    "the image must convince it with coarser shapes, and people name more of the images (blind "
                    "panels). 4 with the 32 -> 64 -> 128 -> 256 px stages is the default recipe; 0 = sharp views "
                    "(the recipe before 2026-12-06, and what the photo workflows use).",
                }),
                "view_noise": ("FLOAT", {
                    "default": DEFAULT_VIEW_NOISE, "min": 0.0, "max": MAX_NOISE, "step": 0.05,
                    "tooltip": "Add Gaussian noise of up to this standard deviation (pixel values 0-1) to each random "
                    "view the classifier sees (randomized smoothing): the image must convince it with shapes that "
                    "survive the noise, not faint pixel patterns. 0.3 is the default recipe; 0 = clean views (recipe "
                    "lucid_coarse and those before it, and what the photo workflows use).",
                }),
                "decay_power": ("FLOAT", {
                    "default": DEFAULT_DECAY_POWER, "min": 0.0, "max": MAX_DECAY_POWER, "step": 0.05,
                    "tooltip": "How fast the spectrum falls, 1/f^this. fourier: the larger, the faster the coarse "
                    f"shapes move against the fine detail; {DEFAULT_DECAY_POWER:g} (the default recipe) draws bold, whole "
                    "shapes in strong light, and people name more of the images (blind panels); 1 = Lucid's (the "
                    "recipes before 2026-12-07, and what the photo workflows use). phase: the slope of its fixed "
                    f"magnitudes (a photo's: {NATURAL_SLOPE:g}). No effect on pixels.",
                }),
                "image_std": ("FLOAT", {
                    "default": DEFAULT_IMAGE_STD, "min": 0.0, "max": MAX_IMAGE_STD, "step": 0.1,
                    "tooltip": f"fourier only: fix each image's contrast (the spread of its colours behind the sigmoid) "
                    f"to this every step. {DEFAULT_IMAGE_STD:g} (the default recipe) keeps the steep spectrum's bold "
                    "shapes with a sixth of its blown-out whites (a photo's spread is about 1.8); 0 = free (the "
                    "recipes before lucid_steep_std, and what the photo workflows use). No effect on the others.",
                }),
                "bn_every": ("INT", {
                    "default": DEFAULT_BN_EVERY, "min": 1, "max": MAX_BN_EVERY, "step": 1,
                    "tooltip": "Measure the batch-norm statistics prior (bn_weight) every n-th step only, at n times "
                    "the weight: the same push on average at 1/n of its cost (on a CPU the prior is about a quarter of a "
                    f"step). {DEFAULT_BN_EVERY} is the default recipe; 1 = every step (the recipes before "
                    "lucid_steep_std, and what the photo workflows use).",
                }),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, steps, target_text="", feather=0, anchor_weight=0.0, crop_center_std=None,
                        crop_max=None, view_blur=None, view_noise=None, decay_power=None, bn_every=None,
                        image_std=None):
        def check_steps():
            if not 1 <= int(steps) <= MAX_STEPS:
                raise CaGError(f"steps must be between 1 and {MAX_STEPS}, got {steps}.")

        def check_anchor():
            # NaN passes ComfyUI's own min/max check (every comparison with NaN is False).
            if not (isinstance(anchor_weight, (int, float)) and math.isfinite(anchor_weight) and anchor_weight >= 0):
                raise CaGError(f"anchor_weight must be a number >= 0 (0 = off), got {anchor_weight}.")

        results = [validation_result(check_steps)] if steps is not None else []
        if anchor_weight is not None:
            results.append(validation_result(check_anchor))
        results += [
            range_result("crop_center_std", crop_center_std, 0, 4, " (0 = crops anywhere)"),
            range_result("crop_max", crop_max, DEFAULT_CROP_SCALE[0], 1, " (of the image area)"),
            range_result("view_blur", view_blur, 0, MAX_BLUR, " px (0 = off)"),
            range_result("view_noise", view_noise, 0, MAX_NOISE, " (0 = off)"),
            range_result("decay_power", decay_power, 0, MAX_DECAY_POWER, " (1 = Lucid's 1/f)"),
            range_result("bn_every", bn_every, 1, MAX_BN_EVERY, " steps (1 = every step)"),
            range_result("image_std", image_std, 0, MAX_IMAGE_STD, " (0 = free contrast)"),
        ]
        if feather is not None and not 0 <= int(feather) <= 256:
            results.append(f"feather must be between 0 and 256 px, got {feather}.")
        if isinstance(target_text, str) and target_text.strip():
            results.append(validation_result(lambda: check_target_grammar(target_text)))
        return first_failure(*results)

    def optimize_images(self, image, classifier, target_class, steps, lr, crops, parameterization, mask_ratio,
                        diversity_weight, bn_weight, tv_weight, seed, mae=None, target_text="", mask=None,
                        feather=0, fill_masked=False, anchor_weight=0.0, crop_center_std=DEFAULT_CENTER_STD,
                        crop_max=DEFAULT_CROP_SCALE[1], view_blur=DEFAULT_VIEW_BLUR, view_noise=DEFAULT_VIEW_NOISE,
                        decay_power=DEFAULT_DECAY_POWER, bn_every=DEFAULT_BN_EVERY, image_std=DEFAULT_IMAGE_STD,
                        unique_id=None):
        ensemble = as_ensemble(classifier)
        device = ensemble.members[0].device
        images = comfy_to_engine(image)
        check_size(*images.shape[-2:], "The input IMAGE")  # a 2048+ px photo would exhaust memory
        images = images.to(device)
        target = self._parse_target(target_text, target_class, ensemble, images.shape[0])
        if mae is not None and module_device(mae) != device:
            # In place: the loader's cached MAE follows, so a repeat run does not copy it again.
            log.info("CaG: moving the MAE from %s to %s, the classifier's device", module_device(mae), device)
            mae = move_module(mae, device)
        config = OptimizeConfig(
            steps=steps, lr=lr, parameterization=parameterization, decay_power=float(decay_power),
            image_std=float(image_std) if image_std and parameterization == "fourier" else None,
            augment=AugmentConfig(crops=crops, center_std=center_std_or_uniform(crop_center_std),
                                  crop_scale=(DEFAULT_CROP_SCALE[0], float(crop_max)), blur=float(view_blur),
                                  noise=float(view_noise)),
            mask_ratio=mask_ratio, diversity_weight=diversity_weight, bn_weight=bn_weight, bn_every=int(bn_every),
            tv_weight=tv_weight, anchor_weight=float(anchor_weight), feather=int(feather), fill_masked=bool(fill_masked),
        )
        progress = OptimizeProgress(steps, unique_id)
        with report_out_of_memory(images.shape[0], tuple(images.shape[-2:]), device):
            result = optimize(
                images, ensemble, target, config=config, mae=mae,
                seed=int(seed), callback=progress, mask=mask,
            )
        if not torch.isfinite(result.images).all():  # never hand on a garbage image silently
            raise NonFiniteLossError("The optimized images contain NaN or Inf values; lower lr or the loss weights.")
        return engine_to_comfy(result.images), loss_report(result.losses, " / ".join(dict.fromkeys(target.labels)))

    @staticmethod
    def _parse_target(target_text, target_class, ensemble, batch):
        text, from_combo = choose_target(target_text, target_class, ensemble.default_target)
        if from_combo and ensemble.num_classes != IMAGENET_CLASSES:
            # An index into another label set would silently pick an unrelated class.
            examples = ", ".join(ensemble.class_names[:3])
            raise CaGError(
                f"target_class '{target_class}' is an ImageNet class, but classifier '{ensemble.name}' has "
                f"{ensemble.num_classes} classes ({examples}, ...): write its class in target_text."
            )
        return parse_target(text, ensemble.class_names, batch)


# --------------------------------------------------------------------------------------------


def upsampled_size(height: int, width: int, scale_by: float, new_width: int, new_height: int) -> tuple[int, int]:
    """(height, width): both given -> exact; one given -> keep the aspect ratio; none -> scale_by."""
    if new_width and new_height:
        return new_height, new_width
    if new_width:
        return max(1, round(height * new_width / width)), new_width
    if new_height:
        return new_height, max(1, round(width * new_height / height))
    return max(1, round(height * scale_by)), max(1, round(width * scale_by))


MIN_SCALE, MAX_SCALE = 0.125, 16.0


def _check_scale(scale_by: float) -> None:
    # NaN passes ComfyUI's own min/max check (every comparison with NaN is False).
    if not (isinstance(scale_by, (int, float)) and math.isfinite(scale_by) and MIN_SCALE <= scale_by <= MAX_SCALE):
        raise CaGError(f"scale_by must be a number between {MIN_SCALE} and {MAX_SCALE:g}, got {scale_by}.")


def _check_side(value: int, name: str) -> None:
    if not 0 <= int(value) <= MAX_SIDE:
        raise CaGError(f"{name} must be 0 (use scale_by) or a size up to {MAX_SIDE}, got {value}.")


class CaGUpsample:
    DESCRIPTION = "Resizes images between optimization stages (e.g. 32 -> 64 -> 128 -> 256) by a factor or to a size."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = ("The resized images.",
                       "The mask resized to the new size (all ones when no mask is connected), for the next stage.")
    FUNCTION = "upsample_images"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to resize."}),
                "scale_by": ("FLOAT", {"default": 2.0, "min": MIN_SCALE, "max": MAX_SCALE, "step": 0.125,
                                       "tooltip": "Factor, used when width and height are 0."}),
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 8,
                                  "tooltip": "Target width; 0 = from scale_by (or from height, keeping the aspect)."}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 8,
                                   "tooltip": "Target height; 0 = from scale_by (or from width, keeping the aspect)."}),
                "method": (list(UPSAMPLE_METHODS), {"default": "bicubic", "tooltip": "Interpolation."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "A mask to resize along (inpainting / outpainting between stages)."}),
                "original": ("IMAGE", {
                    "tooltip": "With a mask: where the mask is 0, take this picture (resized) instead of the upsampled "
                    "image, so the next stage keeps the photo's own sharp pixels (outpainting at full size).",
                }),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, scale_by):
        checks = [lambda v=value, n=name: _check_side(v, n) for value, name in ((width, "width"), (height, "height"))
                  if value is not None]
        if scale_by is not None:
            checks.append(lambda: _check_scale(scale_by))
        return first_failure(*(validation_result(check) for check in checks))

    def upsample_images(self, image, scale_by: float, width: int, height: int, method: str, mask=None,
                        original=None):
        check_image(image)
        if not (width and height):
            _check_scale(scale_by)
        images = image.movedim(-1, 1).float()  # any channel count: resizing does not care
        size = upsampled_size(images.shape[-2], images.shape[-1], scale_by, width, height)
        resized = upsample(images, *size, method)
        if mask is None:
            if original is not None:
                raise CaGError("original needs a mask: it fills the region where the mask is 0.")
            return engine_to_comfy(resized), torch.ones(images.shape[0], *size)
        resized_mask = resize_mask(mask, *size)[:, 0].cpu()
        check_mask_batch(resized_mask.shape[0], images.shape[0])
        if original is not None:
            base = upsample(comfy_to_engine(original), *size, method)
            if resized.shape[1] != 3:
                resized = comfy_to_engine(engine_to_comfy(resized))
            if base.shape[0] not in (1, resized.shape[0]):
                raise CaGError(f"original has {base.shape[0]} images but image has {resized.shape[0]}: give 1 or the same.")
            weights = resized_mask.unsqueeze(1).expand(resized.shape[0], 1, *size)
            resized = composite(resized, base.expand_as(resized), weights)
        return engine_to_comfy(resized), resized_mask


NODE_CLASS_MAPPINGS = {
    "CaGInitNoise": CaGInitNoise,
    "CaGOptimize": CaGOptimize,
    "CaGUpsample": CaGUpsample,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CaGInitNoise": "CaG Init Noise",
    "CaGOptimize": "CaG Optimize",
    "CaGUpsample": "CaG Upsample",
}
