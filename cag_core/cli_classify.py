"""`python -m cag_core classify [--classifier SPEC ...] [--top-k 5] [--target TEXT] IMAGE [IMAGE ...]`.

Prints, per image file, the classifier's top-k classes with their probabilities and, with
--target, p(target) (see classify.py for what it means for a weighted mix).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .classifier import combine
from .classify import classify
from .errors import CaGError
from .timm_classifier import DEFAULT_CLASSIFIER, load_classifier


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("classify", help="classify image files: top-k classes and p(target)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...; RGBA and grayscale are fine)")
    parser.add_argument("--classifier", action="append", default=[], metavar="SPEC",
                        help=f"as for generate: embedded name ({DEFAULT_CLASSIFIER}, ...), a timm model name, or a "
                        "weights file (path, or path@arch); repeat for an ensemble, whose probabilities are the "
                        f"mean of its members' (default: {DEFAULT_CLASSIFIER})")
    parser.add_argument("--top-k", type=int, default=5, help="classes to list per image (default: %(default)s)")
    parser.add_argument("--target", default=None, metavar="NAME|INDEX|MIX",
                        help="also print p(target): a class, an index, or a mix 'tabby:0.7 | tiger cat:0.3'; "
                        "one target per image separated by ';', cycled over the images")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    return parser


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as float [3, H, W] in [0, 1] (alpha dropped, grayscale repeated)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise CaGError(f"Image file '{path}' does not exist.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise CaGError(f"'{path}' could not be read as an image ({exc}).") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255)


def run(args: argparse.Namespace) -> str:
    from .cli import resolve_device  # here, not at the top: cli imports this module

    if args.top_k < 1:
        raise CaGError(f"--top-k must be at least 1, got {args.top_k}.")
    images = [read_image(path) for path in args.images]
    device = resolve_device(args.device)
    members = [load_classifier(spec, device=device) for spec in args.classifier or [DEFAULT_CLASSIFIER]]
    classifier = members[0] if len(members) == 1 else combine(*members)
    result = classify(classifier, images, top_k=args.top_k, target=args.target)
    report = result.report(labels=args.images)
    print(report)
    return report
