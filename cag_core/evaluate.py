"""`python -m cag_core evaluate DIR --reference REF.npz`: FID, IS, KID and precision/recall.

Every number comes from torch-fidelity (pinned 0.4.0, the optional `eval` extra): its feature
extractor (default `inception-v3-compat`, the TF FID Inception ported to PyTorch, which is the
network of ADM's TensorFlow suite) and its metric code. This module only opens the image sets,
checks that they can be compared, picks the options, and reports.

Why the metric steps are called one by one instead of through `calculate_metrics`: the features of
each set are extracted once, and with them FID can also be taken against the precomputed statistics
(`mu`, `sigma`) that ADM's reference batches carry, which is what ADM's `evaluator.py` reports.
The steps are those of torch-fidelity's `calculate_metrics_one_feature_extractor`, and a test checks
that they give `calculate_metrics`'s numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import CaGError
from .image_sets import (
    ImageSet,
    ResizedImages,
    dataset_counts,
    file_identity,
    npz_members,
    open_image_set,
    read_npz_array,
)

log = logging.getLogger("cag_core")

TORCH_FIDELITY_PIN = "0.4.0"
INSTALL_HINT = "pip install 'torch-fidelity==0.4.0' (or the pack's extra: pip install 'comfyui-cag[eval]')"
METRICS = ("fid", "isc", "kid", "prc")
DEFAULT_FEATURE_EXTRACTOR = "inception-v3-compat"
FID_REFERENCES = ("auto", "images", "stats")
# Precision/recall hold three N x N distance matrices in memory; above this, torch-fidelity's
# row-blocked variant (save_cpu_ram) is used instead.
PRC_FULL_MATRIX_LIMIT_BYTES = 8 << 30


@dataclass(frozen=True)
class MetricOptions:
    """Metric settings; the defaults are the usual ones for ImageNet 256 (and torch-fidelity's)."""

    isc_splits: int = 10  # the usual 10; ADM's evaluator cuts 5,000-image splits, the same at 50,000 samples
    kid_subsets: int = 100  # torch-fidelity's default (Binkowski et al.)
    kid_subset_size: int = 1000  # torch-fidelity's default; lowered to the smaller set's size when needed
    prc_neighborhood: int = 3  # k of Kynkaanniemi et al., also ADM's evaluator
    samples_shuffle: bool = True  # shuffle before IS splits: a class-sorted set would give per-split IS of few classes
    rng_seed: int = 2020  # torch-fidelity's default seed for the shuffle and the KID subsets


def import_torch_fidelity():
    """torch_fidelity, or a CaGError with the install command (it is an optional extra)."""
    try:
        import torch_fidelity
    except ImportError as exc:
        raise CaGError(f"Evaluation needs torch-fidelity, which is not installed: {INSTALL_HINT}.") from exc
    if torch_fidelity.__version__ != TORCH_FIDELITY_PIN:
        log.warning("torch-fidelity %s is installed; the evaluation was written and tested against %s",
                    torch_fidelity.__version__, TORCH_FIDELITY_PIN)
    return torch_fidelity


def inception_weights_location() -> dict:
    """Where torch-fidelity downloads its Inception weights from, and where torch.hub keeps them."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    path = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
    return {"url": URL_INCEPTION_V3, "path": str(path), "present_before_run": path.is_file()}


def default_cache_dir() -> Path:
    """torch-fidelity's feature cache: $TORCH_HOME/fidelity_cache (~/.cache/torch/fidelity_cache)."""
    return Path(torch.hub._get_torch_home()) / "fidelity_cache"


def parse_metrics(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise CaGError(f"Unknown metric {', '.join(map(repr, unknown)) or repr(text)} in --metrics: "
                       f"choose from {', '.join(METRICS)} (comma-separated).")
    return names


def check_weights_file(path: str) -> None:
    """Refuse a weights file that is not a plain state dict before torch-fidelity unpickles it fully."""
    file = Path(path)
    if not file.is_file():
        raise CaGError(f"--inception-weights {path} does not exist: give the path of "
                       "weights-inception-2015-12-05-6726825d.pth.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: not a safe plain state dict
        raise CaGError(f"--inception-weights {path} is not a plain PyTorch state dict ({exc}): "
                       "use the file torch-fidelity downloads (weights-inception-2015-12-05-6726825d.pth).") from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CaGError(f"--inception-weights {path} holds no state dict of tensors: use torch-fidelity's "
                       "weights-inception-2015-12-05-6726825d.pth.")


def adm_statistics(reference: ImageSet) -> tuple[np.ndarray, np.ndarray] | None:
    """ADM's precomputed pool_3 `mu`/`sigma` (over the whole data set) when the reference npz has them."""
    if reference.npz_path is None or not {"mu", "sigma"} <= set(npz_members(reference.npz_path)):
        return None
    mu = read_npz_array(reference.npz_path, "mu").astype(np.float64)
    sigma = read_npz_array(reference.npz_path, "sigma").astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise CaGError(f"{reference.npz_path} has mu {list(mu.shape)} and sigma {list(sigma.shape)}: FID "
                       "statistics need mu [D] and sigma [D, D]; use --fid-reference images.")
    return mu, sigma


def fit_options(options: MetricOptions, metrics: tuple[str, ...], n_samples: int, n_reference: int,
                notes: list[str]) -> MetricOptions:
    """Options that the set sizes allow: refuse what cannot be computed, shrink what can, say so."""
    binary = [m for m in metrics if m in ("fid", "kid", "prc")]
    if binary and min(n_samples, n_reference) < 2:
        raise CaGError(f"{'/'.join(binary).upper()} need at least 2 images in each set, got {n_samples} samples "
                       f"and {n_reference} reference images.")
    if "prc" in metrics and min(n_samples, n_reference) <= options.prc_neighborhood:
        raise CaGError(f"Precision/recall with k={options.prc_neighborhood} neighbours need more than "
                       f"{options.prc_neighborhood} images in each set, got {n_samples} and {n_reference}: "
                       "drop prc from --metrics.")
    if "kid" in metrics and options.kid_subset_size > min(n_samples, n_reference):
        smaller = min(n_samples, n_reference)
        notes.append(f"KID subset size {options.kid_subset_size} is more than the {smaller} images of the smaller "
                     f"set: used subsets of {smaller} (not comparable with {options.kid_subset_size}-image subsets).")
        options = replace(options, kid_subset_size=smaller)
    if "isc" in metrics and options.isc_splits > n_samples:
        notes.append(f"IS with {options.isc_splits} splits needs at least {options.isc_splits} samples: "
                     f"used {n_samples} splits.")
        options = replace(options, isc_splits=n_samples)
    return options


def match_sizes(samples: ImageSet, reference: ImageSet, resize: bool, notes: list[str]) -> ImageSet:
    """The samples at the reference size: unchanged, resized on request, or refused."""
    if samples.size == reference.size:
        return samples
    (sh, sw), (rh, rw) = samples.size, reference.size
    if not resize:
        raise CaGError(f"The samples are {sw}x{sh} but the reference images are {rw}x{rh}: ADM compares sets of one "
                       f"resolution (the Inception sees both through the same resize to 299, so a size difference "
                       f"changes the numbers); generate at {rw}x{rh}, or pass --resize-samples to resize them.")
    if abs(sw / sh - rw / rh) > 0.01:
        raise CaGError(f"The samples are {sw}x{sh} and the reference images {rw}x{rh}: their aspect ratios differ, "
                       "so --resize-samples would distort them; generate at the reference's aspect ratio.")
    notes.append(f"Samples resized from {sw}x{sh} to {rw}x{rh} (BOX halving, then BICUBIC: the resize of ADM's "
                 "ImageNet loader) because the reference is at that size and ADM compares at one resolution.")
    return replace(samples, images=ResizedImages(samples.images, reference.size), size=reference.size)


def compute_metrics(samples: ImageSet, reference: ImageSet, metrics: tuple[str, ...], options: MetricOptions, *,
                    feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR, weights_path: str | None = None,
                    cuda: bool = False, batch_size: int = 64, low_memory: bool = False,
                    cache_dir: Path | None = None, reference_cache_name: str | None = None,
                    fid_stats: tuple[np.ndarray, np.ndarray] | None = None, verbose: bool = True) -> dict:
    """torch-fidelity's metrics of `samples` (input1, "generated") against `reference` (input2, "real").

    Returns torch-fidelity's keys, plus `fid_vs_stats` when `fid_stats` are given (FID of the
    samples' features against those precomputed statistics, by torch-fidelity's FID formula).
    """
    import_torch_fidelity()
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_featuresdict_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric
    from torch_fidelity.metric_prc import prc_featuresdict_to_metric
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import (
        create_feature_extractor,
        extract_featuresdict_from_input_id_cached,
        resolve_feature_layer_for_metric,
    )

    if feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise CaGError(f"Unknown feature extractor {feature_extractor!r}: torch-fidelity has "
                       f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}.")
    kwargs = dict(
        input1=samples.images, input2=reference.images, cuda=cuda, batch_size=batch_size,
        isc="isc" in metrics, fid="fid" in metrics, kid="kid" in metrics, prc="prc" in metrics,
        feature_extractor=feature_extractor, feature_extractor_weights_path=weights_path,
        save_cpu_ram=low_memory, cache=cache_dir is not None and reference_cache_name is not None,
        cache_root=str(cache_dir) if cache_dir is not None else None, input2_cache_name=reference_cache_name,
        verbose=verbose, **asdict(options),
    )
    layers = {m: resolve_feature_layer_for_metric(m, **kwargs) for m in metrics}
    try:
        extractor = create_feature_extractor(feature_extractor, sorted(set(layers.values())), **kwargs)
    except RuntimeError as exc:  # load_state_dict: the file is a state dict, but not of this network
        if weights_path is None:
            raise
        raise CaGError(f"{weights_path} does not fit torch-fidelity's {feature_extractor} (its keys or shapes differ): "
                       "use weights-inception-2015-12-05-6726825d.pth.") from exc
    except OSError as exc:  # urllib's URLError is an OSError: no network, or the file is not reachable
        if feature_extractor != DEFAULT_FEATURE_EXTRACTOR or weights_path is not None:
            raise
        where = inception_weights_location()
        raise CaGError(f"Could not download torch-fidelity's Inception weights from {where['url']} to "
                       f"{where['path']} ({exc}): fetch that file on a machine with internet access and put it "
                       "there, or pass --inception-weights FILE.") from exc

    features_1 = extract_featuresdict_from_input_id_cached(1, extractor, **kwargs)
    needs_reference = any(m in metrics for m in ("fid", "kid", "prc"))
    features_2 = extract_featuresdict_from_input_id_cached(2, extractor, **kwargs) if needs_reference else None

    values: dict = {}
    if "isc" in metrics:
        values.update(isc_featuresdict_to_metric(features_1, layers["isc"], **kwargs))
    if "fid" in metrics:
        stats_1 = fid_featuresdict_to_statistics(features_1, layers["fid"])
        stats_2 = fid_features_to_statistics(features_2[layers["fid"]])
        values.update(fid_statistics_to_metric(stats_1, stats_2, verbose))
        values["feature_dims"] = int(features_1[layers["fid"]].shape[1])
        if fid_stats is not None:
            mu, sigma = fid_stats
            if mu.shape[0] != values["feature_dims"]:
                raise CaGError(f"The reference's precomputed statistics are {mu.shape[0]}-dimensional but "
                               f"{feature_extractor} gives {values['feature_dims']}-dimensional features: ADM's "
                               "statistics only fit inception-v3-compat; use --fid-reference images.")
            own = {"mu": stats_1["mu"].astype(np.float64), "sigma": stats_1["sigma"].astype(np.float64)}
            values["fid_vs_stats"] = fid_statistics_to_metric(own, {"mu": mu, "sigma": sigma}, False)[
                "frechet_inception_distance"]
    if "kid" in metrics:
        values.update(kid_featuresdict_to_metric(features_1, features_2, layers["kid"], **kwargs))
    if "prc" in metrics:
        values.update(prc_featuresdict_to_metric(features_1, features_2, layers["prc"], **kwargs))
    values["feature_layers"] = layers
    return values


# ----------------------------------------------------------------------------------------------
# Command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="FID / IS / KID / precision-recall of a generated set against a reference batch",
        description="FID, IS, KID and precision/recall through torch-fidelity (pip install 'torch-fidelity==0.4.0'). "
                    "The first run downloads torch-fidelity's Inception weights (~96 MB) into torch.hub's cache.")
    parser.add_argument("samples", metavar="DIR",
                        help="dataset folder (samples.npz, else images/**.png), an .npz batch, or a folder of PNGs")
    parser.add_argument("--reference", required=True, metavar="REF",
                        help="reference batch: ADM's VIRTUAL_imagenet256_labeled.npz (arr_0), or a folder of PNGs")
    parser.add_argument("--metrics", default="fid,isc,kid,prc", help="comma-separated: fid, isc, kid, prc (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per Inception batch (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=None,
                        help="JSON report (default: evaluation_<reference name>.json in DIR, or beside an .npz DIR)")
    parser.add_argument("--feature-extractor", default=DEFAULT_FEATURE_EXTRACTOR,
                        help="torch-fidelity feature extractor for every metric (default: %(default)s, the TF FID Inception)")
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="use this copy of weights-inception-2015-12-05-6726825d.pth instead of downloading it")
    parser.add_argument("--fid-reference", choices=FID_REFERENCES, default="auto",
                        help="FID against the reference's precomputed ADM statistics (stats, as ADM's evaluator does), "
                             "its images (images), or stats when present with inception-v3-compat (auto)")
    parser.add_argument("--resize-samples", action="store_true",
                        help="resize samples to the reference's size when they differ (refused otherwise)")
    parser.add_argument("--isc-splits", type=int, default=MetricOptions.isc_splits)
    parser.add_argument("--kid-subsets", type=int, default=MetricOptions.kid_subsets)
    parser.add_argument("--kid-subset-size", type=int, default=MetricOptions.kid_subset_size)
    parser.add_argument("--prc-neighborhood", type=int, default=MetricOptions.prc_neighborhood)
    parser.add_argument("--seed", type=int, default=MetricOptions.rng_seed, help="torch-fidelity's rng_seed")
    parser.add_argument("--cache-dir", default=None,
                        help="torch-fidelity's cache for the reference's features (default: $TORCH_HOME/fidelity_cache)")
    parser.add_argument("--no-cache", action="store_true", help="do not cache the reference's features")
    parser.add_argument("--low-memory", action="store_true",
                        help="torch-fidelity's save_cpu_ram: no loader worker processes, precision/recall in row blocks")
    parser.add_argument("--quiet", action="store_true", help="no torch-fidelity progress output")
    return parser


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise CaGError(f"{name} must be a positive integer, got {value}.")
    return value


def _device(choice: str) -> torch.device:
    from .cli import resolve_device  # the one device rule of the command line

    device = resolve_device(choice)
    if device.type not in ("cpu", "cuda"):
        raise CaGError(f"--device {choice}: torch-fidelity runs on cpu or cuda only.")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)  # torch-fidelity moves its model with .cuda(): the current device
    return device


def default_report_path(samples_path: Path, reference_path: Path) -> Path:
    name = f"evaluation_{reference_path.stem}.json"
    return samples_path / name if samples_path.is_dir() else samples_path.with_name(f"{samples_path.stem}_{name}")


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    metrics = parse_metrics(args.metrics)
    batch_size = _positive("--batch-size", args.batch_size)
    options = MetricOptions(
        isc_splits=_positive("--isc-splits", args.isc_splits), kid_subsets=_positive("--kid-subsets", args.kid_subsets),
        kid_subset_size=_positive("--kid-subset-size", args.kid_subset_size),
        prc_neighborhood=_positive("--prc-neighborhood", args.prc_neighborhood), rng_seed=args.seed)
    torch_fidelity = import_torch_fidelity()
    device = _device(args.device)
    if args.inception_weights is not None:
        check_weights_file(args.inception_weights)

    notes: list[str] = []
    samples = open_image_set(args.samples, "samples")
    reference = open_image_set(args.reference, "reference images")
    if set(metrics) != {"isc"}:  # IS looks at the samples alone: their size need not match
        samples = match_sizes(samples, reference, args.resize_samples, notes)
    options = fit_options(options, metrics, len(samples), len(reference), notes)

    stats = None
    if "fid" in metrics and args.fid_reference != "images":
        stats = adm_statistics(reference)
        if args.fid_reference == "stats" and stats is None:
            raise CaGError(f"--fid-reference stats: {args.reference} holds no mu/sigma statistics "
                           "(ADM's reference batches do); use --fid-reference images.")
        if args.fid_reference == "auto" and args.feature_extractor != DEFAULT_FEATURE_EXTRACTOR:
            stats = None  # ADM's statistics are Inception pool_3 features: meaningless for another extractor
    low_memory = args.low_memory
    if "prc" in metrics and not low_memory:
        n1, n2 = len(samples), len(reference)
        if 4 * (n1 * n1 + n2 * n2 + n1 * n2) > PRC_FULL_MATRIX_LIMIT_BYTES:
            low_memory = True
            notes.append(f"Precision/recall of {n1} x {n2} images computed in row blocks (torch-fidelity's "
                         "save_cpu_ram): the full distance matrices would not fit in 8 GB.")

    reference_identity = file_identity(reference.npz_path or Path(args.reference))
    reference_digest = reference_identity.get("sha256") or reference_identity["listing_sha256"]
    cache_dir = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    # torch-fidelity keys its cache by input name and extractor name only: the name carries the
    # reference's content hash, and the weights' hash when they are not the downloaded ones.
    cache_name = f"cag-reference-{reference_digest[:16]}-{len(reference)}x{reference.size[0]}x{reference.size[1]}"
    if args.inception_weights is not None:
        cache_name += f"-weights-{file_identity(Path(args.inception_weights))['sha256'][:8]}"
    weights = (inception_weights_location()
               if args.feature_extractor == DEFAULT_FEATURE_EXTRACTOR and args.inception_weights is None else None)

    values = compute_metrics(
        samples, reference, metrics, options, feature_extractor=args.feature_extractor,
        weights_path=args.inception_weights, cuda=device.type == "cuda", batch_size=batch_size,
        low_memory=low_memory, cache_dir=cache_dir, reference_cache_name=cache_name, fid_stats=stats,
        verbose=not args.quiet)
    if "fid" in metrics and values["feature_dims"] > min(len(samples), len(reference)):
        notes.append(f"FID from fewer images than its {values['feature_dims']} feature dimensions uses a "
                     "rank-deficient covariance: it is biased high and comparable only at the same set sizes "
                     "(the paper's table uses 50,000 samples).")

    report = build_report(args, samples, reference, reference_identity, metrics, options, values, notes,
                          torch_fidelity.__version__, stats is not None, weights, device, batch_size, low_memory,
                          cache_dir, time.perf_counter() - started)
    out = Path(args.out) if args.out else default_report_path(Path(args.samples), Path(args.reference))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"wrote {out}")
    return report


def build_report(args, samples: ImageSet, reference: ImageSet, reference_identity: dict, metrics, options,
                 values: dict, notes: list[str], version: str, used_stats: bool, weights: dict | None,
                 device: torch.device, batch_size: int, low_memory: bool, cache_dir: Path | None,
                 seconds: float) -> dict:
    out_metrics: dict = {}
    if "fid" in metrics:
        out_metrics["fid_vs_images"] = values["frechet_inception_distance"]
        out_metrics["fid_vs_stats"] = values.get("fid_vs_stats")
        out_metrics["fid"] = values["fid_vs_stats"] if used_stats else values["frechet_inception_distance"]
    if "isc" in metrics:
        out_metrics["isc_mean"], out_metrics["isc_std"] = values["inception_score_mean"], values["inception_score_std"]
    if "kid" in metrics:
        out_metrics["kid_mean"] = values["kernel_inception_distance_mean"]
        out_metrics["kid_std"] = values["kernel_inception_distance_std"]
    if "prc" in metrics:
        out_metrics.update(precision=values["precision"], recall=values["recall"], f_score=values["f_score"])

    samples_path = Path(args.samples)
    described = {"path": str(samples_path), "source": samples.source, "count": len(samples),
                 "size": list(samples.size), "memory_mapped": samples.memory_mapped}
    if samples.labels is not None:
        described["classes"] = int(np.unique(samples.labels).size)
    if samples.npz_path is not None:
        described["file"] = file_identity(samples.npz_path, hash_limit=0)  # samples change: size + mtime suffice
    recipe = None
    if samples_path.is_dir():
        counts = dataset_counts(samples_path)
        recipe = counts.pop("recipe", None)
        described.update(counts)
        if "manifest_images" in counts and counts["manifest_images"] != len(samples):
            notes.append(f"manifest.jsonl lists {counts['manifest_images']} images but {len(samples)} were "
                         f"evaluated from {samples.source}: the data set may be incomplete.")
    return {
        "metrics": out_metrics,
        "fid_reference": ("adm-stats" if used_stats else "images") if "fid" in metrics else None,
        "samples": described,
        "reference": {"path": str(args.reference), **reference_identity, "count": len(reference),
                      "size": list(reference.size), "has_adm_statistics": reference.npz_path is not None
                      and {"mu", "sigma"} <= set(npz_members(reference.npz_path))},
        "settings": {"metrics": list(metrics), "feature_extractor": args.feature_extractor,
                     "feature_layers": values["feature_layers"], **asdict(options), "batch_size": batch_size,
                     "device": str(device), "low_memory": low_memory,
                     "cache_dir": str(cache_dir) if cache_dir is not None else None},
        "torch_fidelity": {"version": version, "inception_weights": weights},
        "notes": notes,
        "recipe": recipe,
        "seconds": round(seconds, 2),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def format_table(report: dict) -> str:
    m, s, r = report["metrics"], report["samples"], report["reference"]
    rows = []
    if "fid" in m:
        if m["fid_vs_stats"] is not None:
            rows.append(("FID vs ADM statistics" + (" *" if report["fid_reference"] == "adm-stats" else ""),
                         f"{m['fid_vs_stats']:.4f}"))
        rows.append((f"FID vs {r['count']} reference images" + (" *" if report["fid_reference"] == "images" else ""),
                     f"{m['fid_vs_images']:.4f}"))
    if "isc_mean" in m:
        rows.append((f"IS ({report['settings']['isc_splits']} splits)", f"{m['isc_mean']:.3f} ± {m['isc_std']:.3f}"))
    if "kid_mean" in m:
        rows.append((f"KID ({report['settings']['kid_subset_size']}-image subsets)",
                     f"{m['kid_mean']:.5f} ± {m['kid_std']:.5f}"))
    if "precision" in m:
        rows.append((f"precision / recall (k={report['settings']['prc_neighborhood']})",
                     f"{m['precision']:.4f} / {m['recall']:.4f}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(f"samples: {s['count']} images {s['size'][1]}x{s['size'][0]} ({s['source']} of {s['path']}); "
                 f"reference: {r['count']} images {r['size'][1]}x{r['size'][0]} ({r['name']})")
    lines.append(f"features: {report['settings']['feature_extractor']} (torch-fidelity {report['torch_fidelity']['version']})"
                 + ("; * = the FID reported as 'fid'" if "fid" in m else ""))
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)

