"""Command line: `python -m cag_core generate --class "golden retriever" --out dog.png`.

Runs the whole progressive pipeline with the same engine the ComfyUI nodes call. With no
`--classifier`, the embedded EfficientNet-Lite0 (real ImageNet weights from its pip package) is
used, so it works on a fresh machine with no model hub.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import cli_classify, evaluate
from .augment import AugmentConfig, center_std_or_uniform
from .class_names import imagenet_class_names, short_name
from .classifier import combine
from .errors import CaGError
from .optimize import AUTOCAST_CHOICES, OPTIMIZERS
from .parameterization import NATURAL_SLOPE, PARAMETERIZATIONS, own_decay_power
from .progressive import NOISE_KINDS, UPSAMPLE_METHODS, ProgressiveConfig, generate
from .timm_classifier import DEFAULT_CLASSIFIER, load_classifier

log = logging.getLogger("cag_core")

DEFAULTS = ProgressiveConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cag_core", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate images of ImageNet classes or a text prompt")
    what = gen.add_argument_group("what to generate")
    what.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME|INDEX|MIX",
                      help="target per image: a class name, an index, or 'tabby:0.7 | tiger cat:0.3'; repeat for more images")
    what.add_argument("--text", default=None, help="text prompt (uses CLIP; needs --clip weights)")
    what.add_argument("--negative", default="", help="negative prompts for --text, '|'-separated")
    what.add_argument("--clip", default="ViT-B-32/laion2b_s34b_b79k",
                      help="CLIP 'model/pretrained-tag' for --text, or 'model@path/to/checkpoint.safetensors'")
    start = gen.add_argument_group("start from a picture (inpaint, outpaint, img2img)")
    start.add_argument("--init", default=None, metavar="PHOTO",
                       help="start from this picture instead of noise; the last stage is its own size")
    start.add_argument("--mask", default=None, metavar="MASK.png",
                       help="only this region may change: white = change, black = keep (an RGBA file: transparent = "
                       "change, as ComfyUI's Load Image). Default with an RGBA --init: its alpha")
    start.add_argument("--anchor", type=float, default=DEFAULTS.stage.anchor_weight, metavar="W",
                       help="keep the result's 16x16 colour layout close to the start (0 = off; 10-100 for img2img)")
    start.add_argument("--feather", type=int, default=DEFAULTS.stage.feather, metavar="PX",
                       help="with a mask: px over which it fades in inside its edge")
    start.add_argument("--fill", action="store_true",
                       help="with a mask: start the masked region from a smooth extension of its surroundings "
                       "(first stage only)")
    add_model_arguments(gen)
    run = add_run_arguments(gen)
    run.add_argument("--batch", type=int, default=None, help="images to generate (default: one per --class)")
    run.add_argument("--seed", type=int, default=0)
    add_recipe_arguments(gen)
    out = gen.add_argument_group("output")
    out.add_argument("--out", default="cag.png", help="PNG path; with several images, NAME_0.png, NAME_1.png, ...")
    out.add_argument("--grid", default=None, help="also write all images as one grid PNG here")
    out.add_argument("--quiet", action="store_true", help="no progress bar")

    classes = commands.add_parser("classes", help="list ImageNet class names (optionally matching a word)")
    classes.add_argument("query", nargs="?", default="")

    from . import dataset

    dataset.add_parser(commands)
    evaluate.add_parser(commands)
    cli_classify.add_parser(commands)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--classifier (repeatable), --mae, --mask-ratio: shared by generate and dataset."""
    models = parser.add_argument_group("models")
    models.add_argument("--classifier", action="append", default=[], metavar="SPEC",
                        help=f"embedded name ({DEFAULT_CLASSIFIER}, ...), a timm model name, or a weights file "
                             "(path, or path@arch); repeat for an ensemble (default: %(default)s -> embedded Lite0)")
    models.add_argument("--mae", default=None, help="MAE weights file (mae_visualize_vit_*.pth or .safetensors)")
    models.add_argument("--mask-ratio", type=float, default=DEFAULTS.stage.mask_ratio)
    return models


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Stage sizes and steps, device and precision: shared by generate and dataset."""
    run = parser.add_argument_group("run")
    run.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULTS.sizes), help="side of each stage")
    run.add_argument("--steps", type=int, nargs="+", default=list(DEFAULTS.steps), help="steps per stage (one value or one per stage)")
    run.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    run.add_argument("--autocast", choices=AUTOCAST_CHOICES, default=DEFAULTS.stage.autocast,
                     help="mixed precision: auto = bf16 on CUDA, fp32 on CPU")
    run.add_argument("--cuda-graph", action="store_true",
                     help="CUDA: capture each stage's step once as a CUDA graph and replay it (opt-in; no effect on a CPU)")
    run.add_argument("--compile", action="store_true",
                     help="CUDA: torch.compile the step (opt-in; compiles once per stage size; rounding changes; "
                     "slower on CPUs)")
    return run


def add_recipe_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The optimization recipe (defaults explained in the README): shared by generate and dataset."""
    recipe = parser.add_argument_group("recipe (defaults are explained in the README)")
    recipe.add_argument("--lr", type=float, default=DEFAULTS.stage.lr)
    recipe.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.stage.optimizer)
    recipe.add_argument("--param", choices=PARAMETERIZATIONS, default=DEFAULTS.stage.parameterization)
    recipe.add_argument("--decay-power", type=float, default=None,
                        help=f"how fast the spectrum falls, 1/f^this: fourier's step scale (1 = Lucid's, recipe "
                        f"lucid_smoothed and those before it) or phase's fixed magnitudes. Default "
                        f"{DEFAULTS.stage.decay_power:g} for fourier, or 1 with --init (measured so); phase: "
                        f"{NATURAL_SLOPE:g}, a photo's")
    recipe.add_argument("--image-std", type=float, default=None, metavar="STD",
                        help=f"fourier: fix each image's contrast, the spread of its decorrelated logits behind the "
                        f"sigmoid, to STD every step (a photo's is about 1.8; 0 = free, recipe lucid_steep and those "
                        f"before it). Default {DEFAULTS.stage.image_std:g} for fourier, free with --init (measured so)")
    recipe.add_argument("--noise", choices=NOISE_KINDS, default=DEFAULTS.noise)
    recipe.add_argument("--upsample", choices=UPSAMPLE_METHODS, default=DEFAULTS.upsample_method)
    recipe.add_argument("--crops", type=int, default=DEFAULTS.stage.augment.crops, help="random views per image per step")
    recipe.add_argument("--crop-min", type=float, default=DEFAULTS.stage.augment.crop_scale[0], help="smallest crop area fraction")
    recipe.add_argument("--crop-max", type=float, default=DEFAULTS.stage.augment.crop_scale[1],
                        help="largest crop area fraction (recipe lucid_tight: 0.6 with --crop-center-std 0.25)")
    recipe.add_argument("--crop-center-std", type=float, default=None,
                        help=f"crop centres ~ N(0, this) around the middle; 0 = anywhere (uniform, the recipe before "
                        f"2026-12). Default {DEFAULTS.stage.augment.center_std}, or 0 with --init (the region to "
                        "change can be anywhere in a picture)")
    recipe.add_argument("--jitter", type=float, default=DEFAULTS.stage.augment.jitter)
    recipe.add_argument("--view-blur", type=float, default=None,
                        help=f"blur each view by a Gaussian of sigma U(0, this) px of the classifier's input (0 = sharp "
                        f"views, the recipe before 2026-12-06). Default {DEFAULTS.stage.augment.blur:g}, or 0 with --init "
                        "(measured with sharp views)")
    recipe.add_argument("--view-noise", type=float, nargs="+", default=None,
                        help=f"add Gaussian noise of std U(0, this) pixel values (0..1) to each view (0 = clean views, "
                        f"recipe lucid_coarse and those before it); one value or one per stage (0.3 0.3 0.3 0: recipe "
                        f"lucid_sharp_finish). Default {DEFAULTS.stage.augment.noise:g}, or 0 with --init "
                        "(measured with clean views)")
    recipe.add_argument("--no-flip", action="store_true")
    recipe.add_argument("--diversity", type=float, default=DEFAULTS.stage.diversity_weight)
    recipe.add_argument("--bn", type=float, default=DEFAULTS.stage.bn_weight,
                        help="BN-statistics prior weight, per image (0 = off: recipe lucid_centered)")
    recipe.add_argument("--bn-every", type=int, default=None, metavar="N",
                        help=f"measure the BN-statistics prior every N-th step at N x --bn (the same mean push at 1/N "
                        f"of its cost; 1 = every step, recipe lucid_steep and those before it). Default "
                        f"{DEFAULTS.stage.bn_every}, or 1 with --init (measured so)")
    recipe.add_argument("--tv", type=float, default=DEFAULTS.stage.tv_weight, help="total-variation weight (0 = off)")
    return recipe


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaGError(f"--device {choice} was asked for, but torch sees no CUDA device: use --device cpu.")
    return device


def _given_or_default(given: float | None, default: float, args: argparse.Namespace, photo: float = 0.0) -> float:
    """An option as given, else its default, but `photo` when starting from a picture (--init): the
    photo recipes were measured with crops anywhere, sharp and clean views, the BN prior every step
    and a free contrast."""
    if given is not None:
        return given
    return photo if getattr(args, "init", None) else default


def crop_center_std(args: argparse.Namespace) -> float:
    """--crop-center-std: centred crops, but anywhere when starting from a picture."""
    return _given_or_default(args.crop_center_std, DEFAULTS.stage.augment.center_std, args)


def view_blur(args: argparse.Namespace) -> float:
    """--view-blur: blurred views, but sharp ones when starting from a picture."""
    return _given_or_default(args.view_blur, DEFAULTS.stage.augment.blur, args)


def view_noise(args: argparse.Namespace) -> tuple[float, ...]:
    """--view-noise, one value or one per stage: noisy views, but clean ones when starting from a picture."""
    if args.view_noise is not None:
        return tuple(args.view_noise)
    return (_given_or_default(None, DEFAULTS.stage.augment.noise, args),)


def decay_power(args: argparse.Namespace) -> float | None:
    """--decay-power as given; else for fourier the default's steep spectrum, but Lucid's 1 when
    starting from a picture (the photo recipes were measured so); for the other parameterizations
    their own (None: phase's natural slope)."""
    if args.decay_power is not None:
        return args.decay_power
    if args.param != "fourier":
        return None
    return own_decay_power("fourier") if getattr(args, "init", None) else DEFAULTS.stage.decay_power


def bn_every(args: argparse.Namespace) -> int:
    """--bn-every as given; else the default, but every step when starting from a picture (the
    photo recipes were measured so)."""
    return _given_or_default(args.bn_every, DEFAULTS.stage.bn_every, args, photo=1)


def image_std(args: argparse.Namespace) -> float | None:
    """--image-std as given (0 = free); else the default's fixed contrast for fourier, but free when
    starting from a picture (the photo recipes were measured so) and for the other parameterizations."""
    if args.image_std is None and args.param != "fourier":
        return None
    return _given_or_default(args.image_std, DEFAULTS.stage.image_std, args) or None


def config_from_args(args: argparse.Namespace) -> ProgressiveConfig:
    noises = view_noise(args)
    augment = AugmentConfig(
        crops=args.crops,
        crop_scale=(args.crop_min, args.crop_max),
        center_std=center_std_or_uniform(crop_center_std(args)),
        jitter=args.jitter,
        flip=not args.no_flip,
        blur=view_blur(args),
        noise=noises[0],
    )
    stage = replace(
        DEFAULTS.stage,
        lr=args.lr,
        optimizer=args.optimizer,
        parameterization=args.param,
        decay_power=decay_power(args),
        image_std=image_std(args),
        augment=augment,
        mask_ratio=args.mask_ratio,
        diversity_weight=args.diversity,
        bn_weight=args.bn,
        bn_every=bn_every(args),
        tv_weight=args.tv,
        anchor_weight=getattr(args, "anchor", DEFAULTS.stage.anchor_weight),
        feather=getattr(args, "feather", DEFAULTS.stage.feather),
        fill_masked=getattr(args, "fill", DEFAULTS.stage.fill_masked),
        autocast=args.autocast,
        cuda_graph=args.cuda_graph,
        compile=args.compile,
    )
    return ProgressiveConfig(
        sizes=tuple(args.sizes), steps=tuple(args.steps), noise=args.noise, upsample_method=args.upsample, stage=stage,
        view_noise=noises if len(noises) > 1 else (),  # one value lives in the stage config, as in every recipe
    )


def load_models(args: argparse.Namespace, device: torch.device):
    """(classifier or ensemble, MAE or None) from the model arguments."""
    if getattr(args, "text", None) is not None:
        from .text_classifier import text_classifier

        if "@" in args.clip:
            name, path = args.clip.split("@", 1)
            classifier = text_classifier(name, "", args.text, args.negative, device=str(device), checkpoint_path=path)
        else:
            name, _, tag = args.clip.partition("/")
            classifier = text_classifier(name, tag, args.text, args.negative, device=str(device))
    else:
        specs = args.classifier or [DEFAULT_CLASSIFIER]
        members = [load_classifier(spec, device=device) for spec in specs]
        classifier = members[0] if len(members) == 1 else combine(*members)
    mae = None
    if args.mae:
        from .mae import load_mae

        with torch.inference_mode(False):
            mae = load_mae(args.mae).to(device)
    return classifier, mae


def _target_text(args: argparse.Namespace, classifier) -> str:
    if args.text is not None:
        if args.classes:
            raise CaGError("Give either --text or --class, not both.")
        return classifier.default_target
    if not args.classes:
        raise CaGError("Nothing to generate: give --class NAME (repeatable) or --text PROMPT.")
    return "\n".join(args.classes)


def save_images(images: torch.Tensor, out: str | Path, grid: str | Path | None = None) -> list[Path]:
    """Write [B, 3, H, W] in [0, 1] as PNGs; returns the paths written."""
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    paths = [out] if len(arrays) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix or '.png'}") for i in range(len(arrays))]
    for array, path in zip(arrays, paths):
        Image.fromarray(array).save(path)
    if grid is not None:
        import torchvision

        Path(grid).parent.mkdir(parents=True, exist_ok=True)
        torchvision.utils.save_image(images.detach().cpu(), grid, nrow=min(len(arrays), 4), padding=2)
        paths.append(Path(grid))
    return paths


def read_picture(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(RGB [1, 3, H, W] in [0, 1], alpha [H, W] in [0, 1] or None) of an image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
    except FileNotFoundError:
        raise CaGError(f"No picture at {path}.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise CaGError(f"{path} is not a readable picture ({exc}).") from None
    rgb = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    alpha = None
    if "A" in picture.getbands() or "transparency" in picture.info:
        alpha = torch.from_numpy(np.array(picture.convert("RGBA").getchannel("A"))).float() / 255
    return rgb, alpha


def load_start_picture(init: str | None, mask: str | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """--init and --mask as tensors. The mask: a file's alpha (transparent = change) if it has one,
    else its gray level (white = change); with no --mask, an RGBA --init's own alpha."""
    if init is None:
        if mask is not None:
            raise CaGError("--mask needs --init: the picture whose pixels it keeps or changes.")
        return None, None
    picture, alpha = read_picture(init)
    if mask is None:  # a fully opaque alpha channel means no mask, not an empty one
        return picture, (1 - alpha) if alpha is not None and bool((alpha < 1).any()) else None
    mask_rgb, mask_alpha = read_picture(mask)
    return picture, (1 - mask_alpha) if mask_alpha is not None else mask_rgb[0].mean(0)


def run_generate(args: argparse.Namespace) -> list[Path]:
    device = resolve_device(args.device)
    config = config_from_args(args)
    classifier, mae = load_models(args, device)
    target = _target_text(args, classifier)
    lines = [line for line in target.replace(";", "\n").splitlines() if line.strip()]
    batch = args.batch or (len(lines) if args.text is None else 1)
    total = sum(s.steps for s in config.stage_configs())
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="step", desc=f"{len(config.sizes)} stages", file=sys.stderr)

    def callback(stage, stages, step, steps, images, loss):
        if bar is not None:
            bar.set_description(f"stage {stage + 1}/{stages} ({images.shape[-1]} px)")
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)

    init, mask = load_start_picture(args.init, args.mask)
    start = time.perf_counter()
    try:
        result = generate(classifier, target, batch=batch, seed=args.seed, config=config, mae=mae, device=device,
                          callback=callback, init=init, mask=mask)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    paths = save_images(result.images, args.out, args.grid)
    names = ", ".join(dict.fromkeys(result.labels))
    print(f"wrote {', '.join(map(str, paths))}  ({names}; {elapsed:.1f} s on {device})")
    return paths


def run_classes(args: argparse.Namespace) -> None:
    query = args.query.lower()
    for index, name in enumerate(imagenet_class_names()):
        if query in name.lower():
            print(f"{index:4d}  {short_name(name):30s} {name}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            run_generate(args)
        elif args.command == "classify":
            cli_classify.run(args)
        elif args.command == "classes":
            run_classes(args)
        elif args.command == "evaluate":
            evaluate.run(args)
        else:
            return args.run(args)
    except CaGError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
