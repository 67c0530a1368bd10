"""Three feature-visualization libraries and our pack, side by side, on the same classifier.

Every method generates one image per class from the same EfficientNet-Lite0 (the pack's embedded
default: real ImageNet weights, TF normalization mean 0.5 / std 0.5) and is judged by the same two
networks that took no part in generating, Lite1 and Lite2 (targeted top-1, top-5, mean p(target)),
by BRISQUE (no-reference image quality, lower = more photo-like statistics), and by its cost
(wall and process CPU seconds per image, with the load average).

    pip install -r benchmarks/requirements-peers.txt     # in its own venv, beside torch (see the README)
    python -m benchmarks.peers --quick                   # 2 classes, a few steps: does everything run?
    python -m benchmarks.peers --classes 1,207 --seed 0  # every method, defaults and time-matched

Methods (`--methods`, comma list; `--settings defaults,matched`):
  ours            cag_core.progressive.generate with ProgressiveConfig() (`--ours default,NAME`: also
                  cag_core.recipes.get_recipe(NAME), as method `ours-NAME`)
  lucent          torch-lucent 0.1.8 render_vis, class logit ("labels:C"), 512 steps, 224 px
  maco            horama 0.3.0 maco (MAgnitude Constrained Optimization), 1000 steps, 1280 px
  horama-fourier  horama 0.3.0 fourier, MACO's Lucid-style baseline, 1000 steps, 1280 px
  torch-dreams    torch-dreams 4.0.0 Dreamer.render on the classifier layer, 120 steps, 256 px
Each peer runs at its documented defaults (`<name>-defaults`) and time-matched (`<name>-matched`):
its step count set so that its process CPU time per image is about our default's median in this
run (`--match-seconds` sets the target instead): steps = (target - setup) / per step, both from
two probe runs of 2 and 12 steps on the first class (images discarded, costs in results.json).
`--cap-steps maco=100,...` cuts a method's default step count (recorded in the results; `''` = no
cut): by default MACO and horama-fourier run 100 of their 1000 steps (~1 CPU s per step at 1280 px
on the shared 2-core machine; 1000 steps would be ~4.5 CPU hours for 16 classes).

How each is called (benchmarks/peer_libraries.py): each peer gets Lite0's bare network at the input
sizes its own transforms produce, with Lite0's normalization done the way its documentation says:
lucent `preprocess=False` with the normalization as the network's first step (lucent's own is
torchvision's ImageNet mean/std); torch-dreams `set_custom_normalization(Normalize(0.5, 0.5))`;
horama `values_range=(-1, 1)`, Lite0's input range ("values_range should match your model's
expected input scale"), and its image mapped back to pixels by Lite0's inverse normalization.
The objective is the class logit, as each library documents for a class.

Patches the peers needed (applied at call time with mock.patch, undone after each call; their code
is neither edited nor vendored):
  torch-lucent  kornia >= 0.5 dropped the top-level `kornia.get_rotation_matrix2d` and
                `kornia.warp_affine` that lucent's random_rotate calls (lucent pins kornia<=0.4.1,
                which does not install beside torch 2.14); set to the
                `kornia.geometry.transform` functions of kornia 0.9.0.
  horama MACO   the magnitude spectrum it downloads at first use (storage.googleapis.com, not
                reachable here): `horama.maco_fv.MACO_SPECTRUM_FILENAME` points at the same file
                from the dreamlens 0.1.1 wheel on PyPI (SHA-256 checked against dreamlens' NOTICE).
  torch-dreams  none.
Not patches, but how they are called here: lucent's `show_image=False` and `progress=False` (it
would open an image viewer), horama `device="cpu"` (its default is "cuda"), tqdm bars off
(TQDM_DISABLE=1), and every image gets its own copy of the network (lucent leaves a forward hook on
every module after each render_vis). The global random generators (torch, numpy, random) are
seeded with `--seed` before every image.

Judging: each image (saved 8-bit PNG, as the viewers see it) is resized to the judge's input side
with antialiased bicubic (a 1280 px frame aliases without antialiasing) and classified whole; MACO's
images are also judged on their centre 384 px crop, a separate row (`maco-defaults@centre384`),
since its crops sample only the centre of its frame. BRISQUE (brisque 0.2.0, its shipped model) is
scored on the saved image at its own size and again at 256 px, where all methods are compared at
one scale.

Output (`--out`, default benchmarks/results/peers/; with --quick /tmp/cag-peers-quick): results.json (settings, versions, patches, one
record per image), results.md (the table), images/<method>/<class>.png (each method's images,
named by class index: the blind panel's input, benchmarks/panel.py), sheets/<method>.jpg (one
unlabeled contact sheet per method: no class or method names on the image). `--resume` keeps the
records of an earlier run in --out whose settings match, and generates only what is missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

if "torch" not in sys.modules:
    # Sleeping OpenMP waits: spinning threads on a shared CPU inflate process CPU time (5x measured).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' progress bars

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.quality import judge as quality_judge  # noqa: E402
from cag_core.class_names import short_name  # noqa: E402
from cag_core.cli import save_images  # noqa: E402
from cag_core.progressive import ProgressiveConfig, generate  # noqa: E402
from cag_core.recipes import get_recipe  # noqa: E402
from cag_core.timm_classifier import embedded_classifier  # noqa: E402

GENERATOR = "efficientnet-lite0"
JUDGES = {"Lite1": "efficientnet-lite1", "Lite2": "efficientnet-lite2"}
PEERS = ("lucent", "maco", "horama-fourier", "torch-dreams")
METHODS = ("ours",) + PEERS
SETTINGS = ("defaults", "matched")
QUICK_CLASSES = (1, 207)  # goldfish, golden retriever: tuning classes (benchmarks/quality.py), not held out
QUICK_STEPS = 4  # --quick: every method's default step count, and ours per stage
DEFAULT_CAPS = "maco=100,horama-fourier=100"
CENTRE_CROP = {"maco": 384}  # method -> side of the centre crop judged as its own row
BRISQUE_SIDE = 256
PROBE_STEPS = (2, 12)  # time-matching: two short runs give a peer's CPU cost per step and of its setup
SHEET_TILE, SHEET_COLUMNS, SHEET_JPEG_QUALITY = 256, 4, 85  # sheets/<run>.jpg
FIGURE_TILE, FIGURE_COLUMNS, FIGURE_GAP, FIGURE_JPEG_QUALITY = 128, 8, 8, 88  # --figure: side_by_side.jpg


# ---- methods -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One row of the benchmark: a method at one setting, with its resolved step count."""

    name: str  # e.g. "lucent-defaults", "ours", "ours-NAME"
    method: str  # "ours" or a key of PEER_METHODS
    setting: str  # "defaults", "matched", or the recipe name for ours
    steps: int  # peers: their step count; ours: steps of the last stage (the config says all)
    description: str


def our_config(recipe: str, quick: bool) -> ProgressiveConfig:
    if recipe == "default":
        config = ProgressiveConfig()
    else:
        config = get_recipe(recipe)
    return replace(config, steps=(QUICK_STEPS,)) if quick else config


def generate_ours(config: ProgressiveConfig, classifier, cls: int, seed: int) -> torch.Tensor:
    return generate(classifier, str(cls), batch=1, seed=seed, config=config).images[0]


def parse_caps(text: str) -> dict[str, int]:
    caps = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, _, value = item.partition("=")
        if name not in PEERS or not value.strip().isdigit() or int(value) < 1:
            raise SystemExit(f"--cap-steps: bad item '{item}'; use NAME=STEPS with NAME in {', '.join(PEERS)}.")
        caps[name] = int(value)
    return caps


# ---- judging -----------------------------------------------------------------------------------


def quantize(image01: torch.Tensor) -> torch.Tensor:
    """The 8-bit image as saved (and as the viewers see it), back in [0, 1]."""
    return (image01.clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def judge(net, image01: torch.Tensor, cls: int) -> dict:
    """benchmarks.quality's verdict, on the image resized with antialiasing first (a 1280 px frame
    aliases when the classifier's own resize shrinks it)."""
    x = F.interpolate(image01[None], size=net.input_size, mode="bicubic", align_corners=False, antialias=True)
    return quality_judge(net, x.clamp(0, 1), [cls])[0]


def centre_crop(image01: torch.Tensor, side: int) -> torch.Tensor:
    h, w = image01.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return image01[..., top : top + side, left : left + side]


class Brisque:
    """brisque 0.2.0 with its shipped model, on 8-bit RGB arrays."""

    def __init__(self):
        from brisque import BRISQUE

        self._brisque = BRISQUE(url=False)
        # brisque 0.2.0 computes some features as 1-element arrays (a sum divided by a shape tuple) and
        # converts them with float(), which numpy >= 2.4 refuses: the same values, made scalars first.
        scale_features = self._brisque.scale_features
        self._brisque.scale_features = lambda features: scale_features([_scalar(f) for f in features])

    def __call__(self, image01: torch.Tensor, side: int | None = None) -> float:
        if side is not None and image01.shape[-1] != side:
            image01 = F.interpolate(image01[None], size=(side, side), mode="bicubic", antialias=True)[0].clamp(0, 1)
        array = (image01.permute(1, 2, 0) * 255).round().byte().numpy()
        return round(float(self._brisque.score(array)), 2)


def _scalar(value) -> float:
    import numpy as np

    array = np.asarray(value, dtype=np.float64)
    if array.size != 1:
        raise ValueError(f"BRISQUE feature with {array.size} values, expected one.")
    return float(array.reshape(()))


def evaluate(image01: torch.Tensor, cls: int, judges: dict, brisque: Brisque) -> dict:
    return {
        "judges": {name: judge(net, image01, cls) for name, net in judges.items()},
        "brisque": brisque(image01),
        f"brisque_{BRISQUE_SIDE}": brisque(image01, BRISQUE_SIDE),
    }


# ---- images ------------------------------------------------------------------------------------


def contact_sheet(paths: Sequence[Path], out: Path, tile: int = SHEET_TILE, columns: int = SHEET_COLUMNS) -> None:
    """The images in a grid on white, in the given order, with nothing written on it."""
    from PIL import Image

    rows = math.ceil(len(paths) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), "white")
    for k, path in enumerate(paths):
        image = Image.open(path).convert("RGB").resize((tile, tile), Image.LANCZOS)
        sheet.paste(image, ((k % columns) * tile, (k // columns) * tile))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=SHEET_JPEG_QUALITY)


def side_by_side(out: Path, methods: Sequence[str], classes: Sequence[int], tile: int = FIGURE_TILE) -> Path:
    """`out`/side_by_side.jpg: per method two rows of FIGURE_COLUMNS tiles (its images of `classes`,
    in that order), methods in the given order with a white gap between them; no text on it."""
    from PIL import Image

    rows = math.ceil(len(classes) / FIGURE_COLUMNS)
    figure = Image.new("RGB", (FIGURE_COLUMNS * tile, len(methods) * rows * tile + (len(methods) - 1) * FIGURE_GAP),
                       "white")
    for r, method in enumerate(methods):
        for k, cls in enumerate(classes):
            path = out / "images" / method / f"{cls}.png"
            if not path.exists():
                raise SystemExit(f"--figure: {path} is missing; run method '{method}' on class {cls} first.")
            image = Image.open(path).convert("RGB").resize((tile, tile), Image.LANCZOS)
            figure.paste(image, ((k % FIGURE_COLUMNS) * tile, r * (rows * tile + FIGURE_GAP) + (k // FIGURE_COLUMNS) * tile))
    path = out / "side_by_side.jpg"
    figure.save(path, quality=FIGURE_JPEG_QUALITY)
    return path


# ---- the run -----------------------------------------------------------------------------------


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict]:
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    image = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return image, {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                   "loadavg": round((load + os.getloadavg()[0]) / 2, 2)}


def probe_cost(make: Callable[[int], torch.Tensor], short: int = PROBE_STEPS[0], long: int = PROBE_STEPS[1]) -> dict:
    """CPU seconds per step and of the setup, from two runs of `short` and `long` steps (images discarded)."""
    _, a = timed(lambda: make(short))
    _, b = timed(lambda: make(long))
    per_step = max((b["cpu_seconds"] - a["cpu_seconds"]) / (long - short), 1e-3)
    setup = max(a["cpu_seconds"] - short * per_step, 0.0)
    return {"cpu_seconds_per_step": round(per_step, 4), "setup_cpu_seconds": round(setup, 2),
            "steps": [short, long], "cpu_seconds": [a["cpu_seconds"], b["cpu_seconds"]], "loadavg": b["loadavg"]}


def median(values) -> float:
    values = [float(v) for v in values]
    return statistics.median(values) if values else math.nan


class Benchmark:
    def __init__(self, args):
        self.args = args
        self.out: Path = args.out
        self.classes: list[int] = args.classes
        self.generator = embedded_classifier(GENERATOR)
        self.judges = {name: embedded_classifier(arch) for name, arch in JUDGES.items()}
        self.names = self.generator.class_names
        self.brisque = Brisque()
        self.results = self._load() if args.resume else {}
        self.results.setdefault("runs", {})
        self.results["meta"] = self._meta()

    # -- bookkeeping --
    def _meta(self) -> dict:
        from benchmarks.peer_libraries import PATCHES, library_versions

        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent).stdout.strip()
        except OSError:
            commit = "unknown"
        meta = self.results.get("meta", {})
        return {
            "started": meta.get("started", datetime.datetime.now().isoformat(timespec="seconds")),
            "command": " ".join(sys.argv),
            "commit": commit,
            "classes": self.classes,
            "seed": self.args.seed,
            "quick": self.args.quick,
            "cap_steps": self.args.cap_steps,
            "versions": library_versions(),
            "patches": PATCHES,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "generator": GENERATOR,
            "judges": JUDGES,
            "judge_resize": "bicubic, antialiased, to the judge's input side",
            "brisque_side": BRISQUE_SIDE,
        }

    def _load(self) -> dict:
        path = self.out / "results.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.results["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")
        (self.out / "results.md").write_text(markdown(self.results))

    # -- one method at one setting over all classes --
    def run(self, run: Run, make: Callable[[int], torch.Tensor], settings: dict) -> dict:
        entry = self.results["runs"].get(run.name)
        signature = {"method": run.method, "setting": run.setting, "steps": run.steps, "seed": self.args.seed,
                     "settings": settings}
        if entry is None or {k: entry.get(k) for k in signature} != json.loads(json.dumps(signature)):
            entry = dict(signature, description=run.description, records=[])
        self.results["runs"][run.name] = entry
        done = {r["class"] for r in entry["records"] if (self.out / r["image"]).exists()}
        entry["records"] = [r for r in entry["records"] if r["class"] in done]
        for cls in self.classes:
            if cls in done:
                continue
            image, timing = timed(lambda: make(cls))
            image = quantize(image.detach().float().cpu())
            rel = Path("images") / run.name / f"{cls}.png"
            save_images(image[None], self.out / rel)
            record = {"class": cls, "name": short_name(self.names[cls]), "image": str(rel),
                      "side": image.shape[-1], **timing, **evaluate(image, cls, self.judges, self.brisque)}
            crop = CENTRE_CROP.get(run.method)
            if crop and image.shape[-1] > crop:
                record["centre_crop"] = {"side": crop, **evaluate(centre_crop(image, crop), cls, self.judges, self.brisque)}
            entry["records"].append(record)
            verdict = " ".join(f"{k} {'top1' if v['top1'] else 'top5' if v['top5'] else 'miss'} {v['p']:.2f}"
                               for k, v in record["judges"].items())
            print(f"[{run.name}] class {cls} {record['name']}: {timing['seconds']:.1f} s, {timing['cpu_seconds']:.1f} "
                  f"CPU s (load {timing['loadavg']:.1f}); {verdict}; BRISQUE {record['brisque']:.1f}", flush=True)
            self.save()
        entry["records"].sort(key=lambda r: self.classes.index(r["class"]) if r["class"] in self.classes else 1e9)
        contact_sheet([self.out / r["image"] for r in entry["records"] if r["class"] in self.classes],
                      self.out / "sheets" / f"{run.name}.jpg")
        self.save()
        return entry

    def cpu_per_image(self, name: str) -> float:
        entry = self.results["runs"].get(name, {})
        return median(r["cpu_seconds"] for r in entry.get("records", []) if r["class"] in self.classes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--classes", default=None, help="comma-separated ImageNet indices (required unless --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="peers: defaults, matched, or both")
    parser.add_argument("--ours", default="default", help="our recipes: 'default' and/or names of cag_core.recipes")
    parser.add_argument("--cap-steps", default=DEFAULT_CAPS, help="NAME=STEPS,...: cut a peer's default steps ('' = none)")
    parser.add_argument("--match-seconds", type=float, default=None,
                        help="CPU seconds per image to time-match to (default: ours' median in this run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/results/peers; with --quick /tmp/cag-peers-quick, "
                        "so a check never overwrites the committed results)")
    parser.add_argument("--quick", action="store_true", help=f"development: {QUICK_STEPS} steps, classes {QUICK_CLASSES}")
    parser.add_argument("--resume", action="store_true", help="keep matching records already in --out")
    parser.add_argument("--figure", default=None, metavar="RUNS",
                        help="only write --out/side_by_side.jpg from the images already there: these runs (comma "
                        "list, e.g. ours,maco-defaults), one row pair each, for --classes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    from benchmarks.peer_libraries import PEER_METHODS

    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "cag-peers-quick" if args.quick else Path("benchmarks/results/peers")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.classes:
        args.classes = [int(c) for c in args.classes.split(",") if c.strip()]
    elif args.quick:
        args.classes = list(QUICK_CLASSES)
    else:
        parser.error("--classes is required (e.g. --classes 1,207), or use --quick")
    bad = [c for c in args.classes if not 0 <= c < 1000]
    if bad:
        parser.error(f"--classes: {bad} are not ImageNet-1k indices (0..999)")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for value, allowed, flag in ((methods, METHODS, "--methods"), (settings, SETTINGS, "--settings")):
        unknown = [v for v in value if v not in allowed]
        if unknown:
            parser.error(f"{flag}: unknown {unknown}; allowed: {', '.join(allowed)}")
    caps = parse_caps(args.cap_steps)
    recipes = [r.strip() for r in args.ours.split(",") if r.strip()]
    configs = {r: our_config(r, args.quick) for r in recipes}  # fail on a bad recipe before generating

    if args.figure:
        runs = [r.strip() for r in args.figure.split(",") if r.strip()]
        print(f"wrote {side_by_side(args.out, runs, args.classes)}")
        return 0
    bench = Benchmark(args)
    print(f"{len(args.classes)} classes, seed {args.seed}, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}; out {args.out}", flush=True)
    if "ours" in methods:
        for recipe, config in configs.items():
            name = "ours" if recipe == "default" else f"ours-{recipe}"
            run = Run(name, "ours", recipe, config.stage_configs()[-1].steps,
                      f"cag_core.progressive.generate, {'ProgressiveConfig()' if recipe == 'default' else f'recipe {recipe}'}")
            bench.run(run, lambda c, config=config: generate_ours(config, bench.generator, c, args.seed),
                      {"config": json.loads(json.dumps(asdict(config), default=str))})
    target = args.match_seconds if args.match_seconds is not None else bench.cpu_per_image("ours")
    net, mean, std = bench.generator.model, bench.generator.mean.flatten(), bench.generator.std.flatten()
    for setting in settings:  # all of one setting first: `--settings matched,defaults` runs the cheap rows first
        for method in (m for m in methods if m != "ours"):
            peer = PEER_METHODS[method]
            default_steps = QUICK_STEPS if args.quick else caps.get(method, peer.default_steps)
            if setting == "defaults":
                steps = default_steps
                cut = "" if default_steps == peer.default_steps else f", {default_steps} of its {peer.default_steps} steps"
                description = f"{peer.library} {peer.call}, its defaults{cut}"
                extra = {}
            else:
                if math.isnan(target):
                    raise SystemExit("Time-matching needs ours in this run (--methods ours,...) or --match-seconds.")
                probe = bench.results.setdefault("probes", {}).get(method)
                if probe is None or probe.get("seed") != args.seed:
                    probe = probe_cost(lambda n: peer.generate(net, mean, std, args.classes[0], n, args.seed))
                    bench.results["probes"][method] = dict(probe, seed=args.seed, cls=args.classes[0])
                steps = max(1, round((target - probe["setup_cpu_seconds"]) / probe["cpu_seconds_per_step"]))
                description = (f"{peer.library}, its defaults but {steps} steps: CPU time per image matched to "
                               f"ours ({target:.1f} s)")
                extra = {"match_target_cpu_seconds": round(target, 2), "probe": bench.results["probes"][method]}
            run = Run(f"{method}-{setting}", method, setting, steps, description)
            bench.run(run, lambda c, steps=steps, peer=peer: peer.generate(net, mean, std, c, steps, args.seed),
                      {"library": peer.library, "call": peer.call, "default_steps": peer.default_steps,
                       "defaults": json.loads(json.dumps(peer.defaults, default=str)), "side": peer.side, **extra})
    print(markdown(bench.results))
    print(f"results: {args.out / 'results.json'}, {args.out / 'results.md'}, images under {args.out / 'images'}")
    return 0


# ---- the table ---------------------------------------------------------------------------------


def summarize(records: list[dict], view: str | None = None) -> dict:
    """Counts and medians over records; `view` = "centre_crop" judges that view instead of the frame."""
    views = [r[view] if view else r for r in records if not view or view in r]
    n = len(views)
    out = {"images": n}
    for judge_name in JUDGES:
        verdicts = [v["judges"][judge_name] for v in views]
        out[judge_name] = {"top1": sum(v["top1"] for v in verdicts), "top5": sum(v["top5"] for v in verdicts),
                           "p": round(sum(v["p"] for v in verdicts) / n, 3) if n else math.nan}
    out["brisque"] = median(v["brisque"] for v in views)
    out[f"brisque_{BRISQUE_SIDE}"] = median(v[f"brisque_{BRISQUE_SIDE}"] for v in views)
    for key in ("seconds", "cpu_seconds", "loadavg"):
        out[key] = median(r[key] for r in records)
    return out


def markdown(results: dict) -> str:
    meta = results.get("meta", {})
    lines = [
        "# Peers, side by side: one classifier, four libraries",
        "",
        f"Written by `python -m benchmarks.peers` ({meta.get('command', '')}); commit {meta.get('commit', '?')}, "
        f"{meta.get('started', '?')} to {meta.get('finished', '?')}. Classes {','.join(map(str, meta.get('classes', [])))}, "
        f"seed {meta.get('seed')}; generator Lite0, judges Lite1 and Lite2 (never generated); "
        f"{meta.get('threads')} torch threads, OMP_WAIT_POLICY={meta.get('omp_wait_policy')}, {meta.get('machine', '')}.",
        "",
        "| method | how | steps | side | Lite1 top-1 | Lite1 top-5 | Lite1 p | Lite2 top-1 | Lite2 top-5 | Lite2 p "
        "| BRISQUE | BRISQUE @256 | s / image | CPU s / image | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results.get("runs", {}).items():
        records = entry.get("records", [])
        if not records:
            continue
        views = [(name, None, records[0]["side"])]
        crops = [r["centre_crop"]["side"] for r in records if "centre_crop" in r]
        if crops:
            views.append((f"{name}@centre{crops[0]}", "centre_crop", crops[0]))
        for label, view, side in views:
            s = summarize(records, view)
            n = s["images"]
            l1, l2 = s["Lite1"], s["Lite2"]
            how = entry["description"] if view is None else f"the same images, centre {side} px crop"
            lines.append(
                f"| {label} | {how} | {entry['steps']} | {side} | {l1['top1']}/{n} | {l1['top5']}/{n} | {l1['p']:.2f} "
                f"| {l2['top1']}/{n} | {l2['top5']}/{n} | {l2['p']:.2f} | {s['brisque']:.1f} | {s[f'brisque_{BRISQUE_SIDE}']:.1f} "
                f"| {s['seconds']:.1f} | {s['cpu_seconds']:.1f} | {s['loadavg']:.1f} |"
            )
    lines += [
        "",
        "top-1 / top-5: images whose target class the judge ranks first / in its top 5; p: mean softmax "
        "probability of the target. Judges see the saved 8-bit image, resized (bicubic, antialiased) to their "
        "input side. BRISQUE: median, lower = closer to natural-photo statistics (it also rewards contrast); "
        "'@256' rescores every image at 256 px. s / image: median wall seconds, CPU s / image: median process "
        "CPU seconds (all threads), load: the 1-minute load average while it ran, on a machine shared with other "
        "jobs: compare rows of one run, and read CPU s when the load was high. Steps: ours, per stage.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
