"""`python -m cag_core dataset`: a whole data set, on one process or many (torchrun), resumable.

    python -m cag_core dataset --classes 0-99 --per-class 10 --out runs/ds --batch 8
    torchrun --nproc-per-node 8 -m cag_core dataset --classifier resnet50 \\
        --mae mae_visualize_vit_large.pth --classes all --per-class 50 --out runs/in256 --batch 32 --npz

Image k of class c is generated from the random streams of the key (seed, c, k) (streams.py), so
it depends only on that key and the recipe: not on --batch, on which images share its batch, on
the number of processes, or on a restart. The work is the list of (class, k) not finished yet,
cut into batches of --batch images and dealt round-robin to the ranks, so every rank gets full
batches (all but the very last). Files are written atomically (dataset_files.py); rerunning the
same command skips finished images and makes the rest. At the end rank 0 writes the manifest
(and the ADM sample batch with --npz) from every record in the folder.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import dataset_files as files
from . import distributed
from .class_names import resolve_class
from .classifier import as_ensemble
from .errors import CaGError
from .parameterization import own_decay_power
from .progressive import ProgressiveConfig, generate

log = logging.getLogger("cag_core.dataset")


def add_parser(commands) -> argparse.ArgumentParser:
    from .cli import add_model_arguments, add_recipe_arguments, add_run_arguments

    parser = commands.add_parser(
        "dataset", help="generate a data set: N images per class, on one process or many (torchrun), resumable",
        description=__doc__.split("\n\n")[0],
    )
    what = parser.add_argument_group("what to generate")
    what.add_argument("--classes", required=True,
                      help="'all', a range '0-99', a list '207,281,0-9', or '@file' with one class (index or name) per line")
    what.add_argument("--per-class", type=int, required=True, metavar="N", help="images per class")
    what.add_argument("--seed", type=int, default=0, help="image k of class c comes from the streams of (seed, c, k)")
    add_model_arguments(parser)
    run = add_run_arguments(parser)
    run.add_argument("--batch", type=int, default=8, help="images per optimization batch, per process")
    run.add_argument("--threads", type=int, default=1,
                     help="CPU threads per process (default 1: files are then bit-identical whatever the batch and "
                     "the number of processes; use one process per core with torchrun)")
    run.add_argument("--timeout", type=float, default=30.0, metavar="MIN",
                     help="minutes a rank waits for the others at the start and the end before the job fails")
    add_recipe_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="data set folder (created; reruns resume it)")
    out.add_argument("--npz", action="store_true", help="also write samples.npz in the ADM evaluation layout")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_dataset)
    return parser


# -- what to generate ----------------------------------------------------------------------------


def parse_classes(spec: str, class_names: Sequence[str]) -> list[int]:
    """'all' | '0-99' | '207,281,0-9' | '@file' (one index or name per line, '#' comments) -> sorted
    unique class indices."""
    n = len(class_names)
    spec = spec.strip()
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise CaGError(f"--classes {spec}: no file {path}.")
        entries = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        return sorted({resolve_class(e, class_names) for e in entries if e})
    if spec == "all":
        return list(range(n))
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if dash and lo.strip().isdigit() and hi.strip().isdigit():
            lo_i, hi_i = int(lo), int(hi)
            if not 0 <= lo_i <= hi_i < n:
                raise CaGError(f"--classes range '{part}' must lie within 0-{n - 1} and go upwards.")
            out.update(range(lo_i, hi_i + 1))
        else:
            out.add(resolve_class(part, class_names))
    if not out:
        raise CaGError("--classes is empty: give 'all', a range like '0-99', a list like '207,281', or '@file'.")
    return sorted(out)


def work_items(classes: Sequence[int], per_class: int) -> list[tuple[int, int]]:
    if per_class < 1:
        raise CaGError(f"--per-class must be at least 1, got {per_class}.")
    return [(c, k) for c in classes for k in range(per_class)]


def deal_batches(pending: Sequence[tuple[int, int]], batch: int, world: int) -> list[list[list[tuple[int, int]]]]:
    """Batches of `batch` items, dealt round-robin: rank r gets batches r, r + world, ... Every
    batch is full but the last one overall."""
    if batch < 1:
        raise CaGError(f"--batch must be at least 1, got {batch}.")
    batches = [list(pending[i:i + batch]) for i in range(0, len(pending), batch)]
    return [batches[r::world] for r in range(world)]


# -- the recipe ----------------------------------------------------------------------------------


def _classifier_identity(spec: str) -> dict:
    from .timm_classifier import EMBEDDED_LITE, lite_package_weights_path

    if spec in EMBEDDED_LITE:
        return {"spec": spec, "weights": files.file_identity(lite_package_weights_path(spec))}
    path = spec.rsplit("@", 1)[0] if "@" in spec else spec
    if Path(path).is_file():
        return {"spec": Path(path).name + (f"@{spec.rsplit('@', 1)[1]}" if "@" in spec else ""),
                "weights": files.file_identity(path)}
    import timm

    return {"spec": spec, "weights": {"timm": spec, "timm_version": timm.__version__}}


def recipe_of(args: argparse.Namespace, config: ProgressiveConfig, device: torch.device) -> dict:
    """Everything an image depends on besides its key: compared on every rerun."""
    from .timm_classifier import DEFAULT_CLASSIFIER

    config_dict = json.loads(json.dumps(asdict(config)))
    if not config.view_noise:  # recorded only when used, so folders written before it existed still resume
        del config_dict["view_noise"]
    if config.stage.bn_every == 1:  # recorded only when not every step, so earlier folders still resume
        del config_dict["stage"]["bn_every"]
    own = own_decay_power(config.stage.parameterization)
    if own is None or config.stage.decay_power in (None, own):
        # The parameterization's own fall-off is recorded as None, as folders written before the
        # steep default recorded it: `--decay-power 1` resumes them (the same images).
        config_dict["stage"]["decay_power"] = None
    return {
        "format": 1,
        "seed": args.seed,
        "config": config_dict,
        "classifiers": [_classifier_identity(s) for s in (args.classifier or [DEFAULT_CLASSIFIER])],
        "mae": files.file_identity(args.mae) if args.mae else None,
        # bf16 on CUDA and fp32 on CPUs give close, not equal, images: one device type per folder.
        "device_type": device.type,
    }


def _check_batch_independent(config: ProgressiveConfig) -> None:
    stage = config.stage
    if stage.diversity_weight > 0:
        raise CaGError(
            "--diversity compares the images of a batch with each other, so an image would depend on "
            "--batch and on the number of processes; a data set needs each image to depend on its key only: "
            "set it to 0."
        )


# -- running -------------------------------------------------------------------------------------


class _Progress:
    """Rank 0's bar over the images of all ranks: each rank writes its count to a small file
    (DIR/logs/rank-<r>.done) after every batch; a thread of rank 0 sums them twice a second."""

    def __init__(self, root: Path, rank: distributed.Rank, total: int, quiet: bool):
        self.path = root / "logs" / f"rank-{rank.rank}.done"
        self.root, self.world, self.done = root, rank.world, 0
        self.bar = None
        self._stop = threading.Event()
        files.write_atomic(self.path, b"0")
        if rank.is_main and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc=f"{rank.world} process(es)", file=sys.stderr)
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def add(self, n: int) -> None:
        self.done += n
        files.write_atomic(self.path, str(self.done).encode())

    def _total(self) -> int:
        total = 0
        for r in range(self.world):
            try:
                total += int((self.root / "logs" / f"rank-{r}.done").read_text() or 0)
            except (FileNotFoundError, ValueError):
                pass
        return total

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self.bar.n = self._total()
            self.bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self.bar is not None:
            self._thread.join()
            self.bar.n = self._total()
            self.bar.close()


def _rank_log(root: Path, rank: distributed.Rank) -> logging.Handler:
    (root / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(root / "logs" / f"rank-{rank.rank}.log")
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank.rank}/{rank.world} %(levelname)s %(message)s"))
    # The rank's log goes to its file only: on the terminal, rank 0's progress bar says it all.
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


def _lock(root: Path):
    """An exclusive lock on DIR/.lock held by rank 0 for the run: a second job on the same folder
    (on this machine) is refused instead of racing it."""
    handle = open(root / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CaGError(f"Another dataset job is writing {root} (it holds {root / '.lock'}): wait for it, "
                       "or use another --out.") from None
    return handle


@torch.no_grad()
def judge(ensemble, images: torch.Tensor, classes: Sequence[int]) -> tuple[list[int], list[float]]:
    """The generator's own verdict on each finished image (its native input, no views): top-1 and
    p(target), the members' probabilities averaged with the ensemble weights."""
    total = sum(ensemble.weights)
    probs = sum(w / total * _probabilities(m, images.to(m.device)) for m, w in zip(ensemble.members, ensemble.weights))
    top1 = probs.argmax(-1).tolist()
    p = [float(probs[i, c]) for i, c in enumerate(classes)]
    return top1, p


def _probabilities(member, images: torch.Tensor) -> torch.Tensor:
    """Softmax of each image on its own, as a pair with itself: on CPUs a forward of another size
    runs other kernels (optimize._forward), and the record of an image must not depend on its batch."""
    return torch.cat([member(torch.cat([x, x]))[:1] for x in images.split(1)]).float().softmax(-1)


def make_batch(items, ensemble, mae, config, seed, device, rank, root) -> None:
    classes = [c for c, _ in items]
    start = time.perf_counter()
    result = generate(ensemble, "\n".join(str(c) for c in classes), batch=len(items), config=config, mae=mae,
                      device=device, keys=[(seed, c, k) for c, k in items])
    seconds = (time.perf_counter() - start) / len(items)
    top1, p_target = judge(ensemble, result.images, classes)
    arrays = (result.images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, (cls, k) in enumerate(items):
        files.write_png_atomic(files.image_path(root, cls, k), arrays[i])
        record = {"class": cls, "k": k, "file": files.image_path(root, cls, k).relative_to(root).as_posix(),
                  "seed": seed, "loss": result.image_losses[i], "seconds": round(seconds, 3),
                  "top1": top1[i], "p_target": p_target[i], "rank": rank.rank}
        files.write_atomic(files.record_path(root, cls, k), (json.dumps(record, sort_keys=True) + "\n").encode())


def run_dataset(args: argparse.Namespace) -> int:
    if "TORCHELASTIC_RUN_ID" not in os.environ:  # not under torchrun
        return _run_dataset(args)
    # Under torchrun: a rank's uncaught error goes into the job's error summary with its traceback.
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_run_dataset)(args)


def _run_dataset(args: argparse.Namespace) -> int:
    from .cli import config_from_args, load_models

    rank = distributed.start(args.device, args.timeout)
    root = Path(args.out)
    try:
        if rank.device.type == "cpu":
            if args.threads < 1:
                raise CaGError(f"--threads must be at least 1, got {args.threads}.")
            torch.set_num_threads(args.threads)
        config = config_from_args(args)
        _check_batch_independent(config)
        config.stage_configs()  # refuses a bad steps/sizes pairing before any model loads
        classifier, mae = load_models(args, rank.device)
        ensemble = as_ensemble(classifier)
        items = work_items(parse_classes(args.classes, ensemble.class_names), args.per_class)
        lock = None
        if rank.is_main:
            recipe = recipe_of(args, config, rank.device)
            resumed = files.check_or_write_recipe(root, recipe)
            lock = _lock(root)
            removed = files.remove_temporaries(root)
            done = files.finished(root, items)
            pending = [item for item in items if item not in done]
            plan = {"pending": pending, "resumed": resumed, "done": len(done), "removed": removed}
        plan = distributed.broadcast(plan if rank.is_main else None, rank)
        handler = _rank_log(root, rank)
        mine = deal_batches(plan["pending"], args.batch, rank.world)[rank.rank]
        log.info("start: %d of %d images to make (%d done before%s), %d batches here, device %s",
                 len(plan["pending"]), len(items), plan["done"], ", resumed" if plan["resumed"] else "",
                 len(mine), rank.device)
        if rank.is_main and plan["done"]:
            print(f"{root}: {plan['done']} of {len(items)} images already made; making the other "
                  f"{len(plan['pending'])}.", file=sys.stderr)
        progress = _Progress(root, rank, len(plan["pending"]), args.quiet)
        try:
            for j, batch in enumerate(mine):
                start = time.perf_counter()
                make_batch(batch, ensemble, mae, config, args.seed, rank.device, rank, root)
                progress.add(len(batch))
                log.info("batch %d/%d: %d images (classes %s) in %.1f s", j + 1, len(mine), len(batch),
                         sorted({c for c, _ in batch}), time.perf_counter() - start)
            distributed.barrier(rank)  # every rank's images are on disk
        finally:
            progress.close()
        if rank.is_main:
            _finish(root, items, args)
            lock.close()
        log.info("done")
        log.removeHandler(handler)
    except Exception:
        log.exception("failed")
        raise
    finally:
        distributed.finish(rank)
    return 0


def _finish(root: Path, items: Sequence[tuple[int, int]], args: argparse.Namespace) -> None:
    missing = [item for item in items if item not in files.finished(root, items)]
    if missing:
        raise CaGError(
            f"{len(missing)} images that the ranks reported finished are not in {root} (first: class {missing[0][0]}, "
            f"k {missing[0][1]}): with several machines, --out must be a folder they all share."
        )
    records = files.all_records(root)
    files.write_manifest(root, records)
    message = f"wrote {root / files.MANIFEST} ({len(records)} images)"
    if args.npz:
        write_samples(root, records, args.seed)
        message += f" and {root / files.SAMPLES}"
    print(message, file=sys.stderr)


def sample_order(records: Sequence[dict], seed: int) -> list[dict]:
    """The order of samples.npz: shuffled by a fixed permutation of (seed, class, k). ADM's
    evaluator computes the Inception Score over consecutive splits of the file; in class order each
    split would hold a tenth of the classes and the score would come out far too low."""
    from .streams import stream_seed

    return sorted(records, key=lambda r: stream_seed((seed, r["class"], r["k"], "npz-order")))


def write_samples(root: Path, records: Sequence[dict], seed: int) -> None:
    from PIL import Image

    ordered = sample_order(records, seed)
    first = np.asarray(Image.open(root / ordered[0]["file"]).convert("RGB"))
    images = (np.asarray(Image.open(root / r["file"]).convert("RGB")) for r in ordered)
    files.write_samples_npz(root / files.SAMPLES, images, [r["class"] for r in ordered], first.shape[:2])
