"""Speed of the optimize step, against a straightforward reference, in one command.

    python -m benchmarks.speed                  # the default grid for this device (2 CPU cores: ~3 min)
    python -m benchmarks.speed --quick          # a smoke test (under a minute on 2 CPU cores)
    python -m benchmarks.speed --grid full      # every workload x batch 1/4/16 x stage 64/128/256
    python -m benchmarks.speed --device cuda    # the CUDA grid (see benchmarks/gpu_check.sh)

Workloads (random-init weights are fine for timing; the embedded Lite0 has its real ones):
  a = mae-base+resnet50, b = mae-large+resnet50, c = lite0 (the embedded default, no MAE).
Each step is the engine's default: Fourier parameterization, 2 random views at the classifier's
224 px, MAE mask ratio 0.75, the per-image BN-statistics and TV priors (since 2026-12-02), Adam. The stage resolution (64/128/256) is the size of the optimized
image; the MAE resizes it to 224 and the views are cut at 224, so it changes little of the cost.

Variants of the engine step ("+"-joined): fp32 | bf16 | fp16 (autocast), cl (channels_last
classifier, opt-in; the fp32 CPU step is channels_last already), compile (OptimizeConfig.compile:
torch.compile of the step's forward, image -> loss), graph (OptimizeConfig.cuda_graph: the whole
step captured as one CUDA graph after 3 warm-up steps; on a CPU the same code runs uncaptured).
"fp32" is the engine's default on the CPU (with its oneDNN linear and folded-BatchNorm fast paths);
"bf16" is its default on CUDA (autocast "auto").

For every (workload, batch, stage size) the reference (benchmarks/reference_step.py: per-image loop,
fp32, one mask at a time, no fusion) and every variant run on the same start images, the same seeds
and the same random masks and views. Reported: median ms per step, images x steps per second, peak
memory of a step (CPU: peak RSS above the pre-step RSS, with large blocks returned to the OS while
measuring; CUDA: max_memory_allocated above the pre-step allocation), the speed-up over the
reference measured in the same run with the runs interleaved, FLOPs of the step (counted with
torch.utils.flop_counter), achieved TFLOP/s and its fraction of the device's bf16 dense peak, and a
numerical check: the loss and gradient of one step must match the reference's (see `passes`).
A failed check exits 1. Results and their tables: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random-init timm models; never touch the network
if "torch" not in sys.modules:
    # OpenMP threads that spin while waiting (the default) make a shared, oversubscribed CPU useless
    # for timing: identical steps varied 10x. Sleeping waits keep them within a few %. Must be set
    # before torch starts its OpenMP runtime; OMP_WAIT_POLICY=ACTIVE in the environment overrides.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402

from benchmarks.reference_step import reference_loss, reference_optimize  # noqa: E402
from cag_core import cpu_linear  # noqa: E402
from cag_core.classifier import Classifier, as_ensemble  # noqa: E402
from cag_core.mae import MAEConfig  # noqa: E402
import cag_core.optimize as engine  # noqa: E402
from cag_core.optimize import (  # noqa: E402
    OptimizeConfig,
    _autocast,
    autocast_dtype,
    compiled_step_forward,
    draw_step_randoms,
    frozen_models,
    optimize,
    step_forward,
    views_per_forward,
)
from cag_core.precast import weights_in_autocast_dtype  # noqa: E402
from cag_core.progressive import init_noise, noise_streams  # noqa: E402
from cag_core.streams import ImageStreams  # noqa: E402
from cag_core.targets import parse_target  # noqa: E402

TARGET = "goldfish"
SEED = 0


# ----------------------------------------------------------------------------------------------
# What to run


@dataclass(frozen=True)
class Workload:
    name: str
    classifier: str  # timm architecture (random init) or an embedded EfficientNet-Lite name
    mae: str | MAEConfig | None  # MAE_CONFIGS name or a config (random init), or None


WORKLOADS = {
    "a": Workload("mae-base+resnet50", "resnet50", "base"),
    "b": Workload("mae-large+resnet50", "resnet50", "large"),
    "c": Workload("lite0", "efficientnet-lite0", None),
}


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    graph: bool = False
    fold: bool = False

    @classmethod
    def parse(cls, text: str) -> "Variant":
        parts = text.strip().split("+")
        precision = parts[0]
        flags = set(parts[1:])
        if precision not in ("fp32", "bf16", "fp16") or not flags <= {"cl", "compile", "graph", "fold"}:
            raise SystemExit(f"Bad variant '{text}': precision fp32|bf16|fp16, then optional +cl, +compile, +graph, "
                             "+fold.")
        return cls(text, precision, "cl" in flags, "compile" in flags, "graph" in flags, "fold" in flags)

    @property
    def autocast(self) -> str:
        return "off" if self.precision == "fp32" else self.precision

    def config(self, base: OptimizeConfig) -> OptimizeConfig:
        """The engine's settings for this variant (the layout is set on the model: `Setup`)."""
        return replace(base, autocast=self.autocast, compile=self.compile, cuda_graph=self.graph)


# Grids: rows of (workload key, batches, stage sizes, variants), and timed runs per implementation.
CPU_VARIANTS = ("fp32", "bf16+cl")
GRIDS = {
    # 2 CPU cores: batch 16 with an MAE (a, b) costs minutes per step for the reference and the
    # variants together, so it is left out; an MAE step resizes every stage to 224, so the stage
    # size hardly matters there: a runs at 64 and 256, b at 64. c runs the whole 3 x 3 grid.
    "cpu": {
        "rows": [("c", (1, 4, 16), (64, 128, 256), CPU_VARIANTS),
                 ("a", (1, 4), (64, 256), CPU_VARIANTS),
                 ("b", (1, 4), (64,), CPU_VARIANTS)],
        "repeats": 3,
        "leak_runs": 100,
    },
    "quick": {"rows": [("c", (1, 4), (64,), ("fp32", "bf16+cl")), ("a", (1,), (64,), ("fp32",))], "repeats": 2},
    "full": {"rows": [(k, (1, 4, 16), (64, 128, 256), ("fp32", "bf16", "bf16+cl")) for k in "abc"], "repeats": 3},
    # The GPU utilization target: workload b at batch >= 32 against the reference, eager and as a
    # CUDA graph (torch.compile is timed apart in gpu_check.sh: its compile time would crowd out
    # the rest). fp32 ran at 3.4-3.7 % of the bf16 peak twice (benchmarks/README.md): left out.
    "gpu-peak": {"rows": [("b", (32, 64, 128), (256,), ("bf16", "bf16+cl", "bf16+cl+graph"))], "repeats": 3,
                 "leak_runs": 50},
}

# bf16 dense tensor-core peak, TFLOP/s, by device-name substring (first match wins).
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0))


def device_peak_tflops(device: torch.device) -> float | None:
    """The GPU's bf16 dense peak from its name (BF16_PEAK_TFLOPS); None for CPUs and unknown GPUs."""
    if device.type != "cuda":
        return None
    gpu = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in gpu), None)


# ----------------------------------------------------------------------------------------------
# Models, built once per process and reused by every measurement


_MODELS: dict[tuple[str, str], tuple[Classifier, torch.nn.Module | None]] = {}


def models(workload: Workload, device: torch.device):
    key = (workload.name, str(device))
    if key not in _MODELS:
        from cag_core.mae import mae_from_config
        from cag_core.timm_classifier import embedded_classifier, timm_classifier
        from cag_core.efficientnet_lite import EMBEDDED_LITE

        if workload.classifier in EMBEDDED_LITE:
            classifier = embedded_classifier(workload.classifier, device=device)
        else:
            torch.manual_seed(SEED)
            classifier = timm_classifier(workload.classifier, pretrained=False, device=device)
        mae = mae_from_config(workload.mae, seed=SEED).to(device) if workload.mae else None
        _MODELS[key] = (classifier, mae)
    return _MODELS[key]


_ENGINE_FAST_PATH = engine.fast_classifier_path


def _always_folded(device: torch.device, autocast: str) -> bool:
    return True


def step_inputs(classifier: Classifier, batch: int, size: int, device: torch.device):
    """(target, start images) of every measured run: TARGET for each image, gray noise of SEED."""
    target = parse_target(TARGET, classifier.class_names, batch).to(device)
    images = init_noise(noise_streams(SEED, batch), size, size, "gray", device=device)
    return target, images


class Setup:
    """Puts the shared classifier into a variant's layout and back (compile and graph are engine
    settings: `Variant.config`)."""

    def __init__(self, classifier: Classifier, mae):
        self.classifier, self.mae = classifier, mae

    def apply(self, variant: Variant | None):
        """None = the reference's state: the default layout."""
        cl = bool(variant and variant.channels_last)
        if self.classifier.channels_last != cl:
            self.classifier.use_channels_last(cl)
        # +fold: the BatchNorm-folded classifier (the CPU fp32 default) at any precision and device.
        engine.fast_classifier_path = _always_folded if variant and variant.fold else _ENGINE_FAST_PATH
        # Built (and checked, a few forwards) here, outside the FLOP count of the first step; the
        # oneDNN linear's one-time check too.
        self.classifier.folded_model()
        cpu_linear.available()


# ----------------------------------------------------------------------------------------------
# Measuring


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_LIBC = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL("libc.so.6")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(trim: bool = True) -> float:
    """Resident set size now (after returning free heap memory to the OS)."""
    if _LIBC is not None and trim:
        _LIBC.malloc_trim(0)
    return _status_kb("VmRSS") / 1024


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict):
    """out["peak_mb"] = peak memory of the block above what was in use when it started.

    CPU: blocks >= 64 KiB are mmapped (so frees return to the OS) while measuring, the peak RSS
    counter is reset (/proc/self/clear_refs), and VmHWM is read after. Afterwards glibc gets back
    the thresholds its dynamic tuning ends at (32 MiB), so timing runs are not slowed down.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield
        sync(device)
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    if _LIBC is None or not os.path.exists("/proc/self/clear_refs"):
        yield
        out["peak_mb"] = float("nan")
        return
    _LIBC.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    _LIBC.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    try:
        base = rss_mb()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        yield
        out["peak_mb"] = _status_kb("VmHWM") / 1024 - base
    finally:
        _LIBC.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
        _LIBC.mallopt(M_TRIM_THRESHOLD, 64 * 2**20)


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward_flops(grad_out, q, k, v, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out, q, k, v)


def _onednn_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs):
    return 2 * math.prod(x_shape) * w_shape[0]


def flop_counter() -> FlopCounterMode:
    """torch's counter, plus the CPU kernels it does not know: flash attention, and the oneDNN
    linear that cag_core/cpu_linear.py routes fp32 CPU linear layers to."""
    aten = torch.ops.aten
    mapping = {}
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if mkldnn is not None and hasattr(mkldnn, "_linear_pointwise"):
        mapping[mkldnn._linear_pointwise] = _onednn_linear_flops
    for op, fn in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flops),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward_flops),
    ):
        if hasattr(aten, op):
            mapping[getattr(aten, op)] = fn
    return FlopCounterMode(display=False, custom_mapping=mapping)


def engine_loss_and_grad(images, classifier, mae, target, config, seed):
    """One engine step's loss and gradient: the forward `optimize` runs (compiled when the config
    says so), on randoms drawn the way it draws them."""
    device = images.device
    with torch.inference_mode(False), torch.enable_grad():
        image_fn = engine.image_parameterization(images.detach().clone(), config)
        ensemble = as_ensemble(classifier)
        randoms = draw_step_randoms(mae, config, ImageStreams.for_batch(seed, images.shape[0]))
        # Every field, so a random input the step gains later cannot be left behind again.
        randoms = engine.StepRandoms(*(None if r is None else r.to(device) for r in randoms.tensors()))
        forward = compiled_step_forward() if config.compile else step_forward
        bn_stats = engine.step_bn_stats(config, ensemble, device)
        with (
            weights_in_autocast_dtype(frozen_models(ensemble, mae), autocast_dtype(device, config.autocast)),
            bn_stats if bn_stats is not None else contextlib.nullcontext(),
        ):
            _, loss = forward(image_fn, ensemble, target, mae, config, classifier.input_size, config.augment.crops,
                              bn_stats, views_per_forward(config, device, ensemble), randoms)
        loss = loss.sum()  # the objective the engine minimizes: the sum of the images' losses
        loss.backward()
    return float(loss.detach()), image_fn.params[0].grad.detach().float()


def reference_loss_and_grad(images, classifier, mae, target, config, seed):
    """The reference's loss and gradient; under `config.autocast` only to calibrate bf16 checks."""
    with torch.inference_mode(False), torch.enable_grad():
        params = engine.image_parameterization(images.detach().clone(), config).params[0].detach().clone()
        params.requires_grad_(True)
        with _autocast(images.device, config.autocast):
            loss = reference_loss(params, tuple(images.shape[-2:]), classifier, target, config, mae,
                                  ImageStreams.for_batch(seed, images.shape[0]))
        loss.backward()
    return float(loss.detach()), params.grad.detach().float()


def _errors(loss, grad, ref_loss, ref_grad) -> tuple[float, float, float]:
    loss_rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
    grad_rel = float((grad - ref_grad).norm() / ref_grad.norm().clamp(min=1e-30))
    grad_cos = float(F.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0))
    return loss_rel, grad_rel, grad_cos


def fp32_tolerances(device: torch.device) -> tuple[float, float]:
    """(loss, gradient) relative errors allowed between two fp32 implementations. The loss only
    sees rounding (1e-4). The gradient of a net with ReLU/ReLU6 also sees rounding flip a few
    units across their kinks, which switches their whole gradient path: channels_last alone moved
    the Lite0 gradient by up to 1.3e-3, BatchNorm folding with channels_last up to 7.6e-3 (CPU
    grid, 2026-11-28), so 1e-2. With cuDNN's default TF32 convolutions, 1e-2/5e-2."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return 1e-2, 5e-2
    return 1e-4, 1e-2


def compare(loss, grad, ref: tuple, ref_same_precision: tuple | None) -> dict:
    """Errors of one step's loss and gradient against the fp32 reference's (see `passes`)."""
    loss_rel, grad_rel, grad_cos = _errors(loss, grad, *ref)
    out = {"loss": loss, "ref_loss": ref[0], "loss_rel": loss_rel, "grad_rel": grad_rel, "grad_cos": grad_cos}
    if ref_same_precision is not None:
        same_loss_rel, _, same_cos = _errors(loss, grad, *ref_same_precision)
        _, _, ref_self_cos = _errors(*ref_same_precision, *ref)  # the precision's own effect on the reference
        out |= {"same_precision_loss_rel": same_loss_rel, "same_precision_grad_cos": same_cos,
                "ref_low_precision_vs_fp32_grad_cos": ref_self_cos}
    return out


def passes(row: dict, tolerances: tuple[float, float]) -> bool:
    """fp32 variants must match the fp32 reference within `tolerances`. A bf16/fp16 variant cannot:
    one bf16 step's gradient can be far from the fp32 one for any implementation (Lite0: cosine
    0.62-0.83, measured on the reference itself; the MAE workloads: 0.99), so it is held to the
    reference run under the same autocast: loss within 1e-2, gradient cosine above 0.98 (measured:
    0.986-0.9997).
    A captured (graph) variant must also match its own run without capture (`graph_check`)."""
    if "graph_ok" in row and not row["graph_ok"]:
        return False
    if "loss_rel" not in row:
        return True
    if "same_precision_grad_cos" not in row:
        return row["loss_rel"] < tolerances[0] and row["grad_rel"] < tolerances[1]
    return row["same_precision_loss_rel"] < 1e-2 and row["same_precision_grad_cos"] > 0.98


def time_engine(images, classifier, mae, target, config, device, seed) -> tuple[float, float | None]:
    """(seconds per step of one `optimize` call, setup included, synchronized only at both ends:
    a sync per step would stop the CPU from queueing the next step while the GPU runs this one,
    which the engine avoids on purpose; steady-state seconds per step: the median interval between
    the engine's per-step loss reads over the second half of the run (each read waits for its
    step to finish), None for runs under 4 steps). The steady rate leaves out setup, warm-up and
    graph capture, which a 100-step stage amortizes."""
    stamps: list[float] = []
    sync(device)
    start = time.perf_counter()
    result = optimize(images, classifier, target, config=config, mae=mae,
                      streams=ImageStreams.for_batch(seed, images.shape[0]),
                      callback=lambda *_: stamps.append(time.perf_counter()))
    sync(device)
    whole = (time.perf_counter() - start) / len(result.losses)
    half = stamps[len(stamps) // 2 - 1:]
    steady = statistics.median(b - a for a, b in zip(half, half[1:])) if len(stamps) >= 4 else None
    return whole, steady


def capture_never():
    """The graph variant's engine exactly, minus the capture: static buffers, capturable Adam and
    the side-stream warm-up, every step eager (its warm-up never ends)."""
    return mock.patch.object(engine, "GRAPH_WARMUP_STEPS", 1 << 30)


def emulated_capture():
    """On a CPU, where nothing is captured: capture and replay emulated at the ATen level
    (benchmarks/graph_emulator.py), so the check still tests what a graph would replay."""
    from benchmarks.graph_emulator import EmulatedGraphRunner

    return mock.patch.object(engine, "StepRunner", EmulatedGraphRunner)


def graph_check(images, classifier, mae, target, config, steps: int = 8) -> dict:
    """A captured run against the same run without capture: per-step losses and final images.
    Identical kernels on identical inputs, so they should agree to rounding (atomics in
    grid_sample's backward); a stale buffer or a replay that misses an input would not. On a CPU
    the capture is emulated (bit for bit expected), except for compiled steps, whose kernels the
    ATen-level emulation cannot see (no check then)."""
    if images.device.type != "cuda" and config.compile:
        return {}
    runs, replayed = [], []
    for ctx in (emulated_capture() if images.device.type != "cuda" else contextlib.nullcontext(), capture_never()):
        with ctx, noting_replays(replayed):
            runs.append(optimize(images, classifier, target, config=replace(config, steps=steps), mae=mae,
                                 streams=ImageStreams.for_batch(SEED + 7, images.shape[0])))
    graph, eager = runs
    loss_rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(graph.losses, eager.losses))
    image_abs = float((graph.images - eager.images).abs().max())
    # Without a capture (it failed and the engine fell back, see the log) the comparison is empty.
    captured = replayed[0]
    return {"graph_captured": captured, "graph_loss_rel": loss_rel, "graph_image_abs": image_abs,
            "graph_ok": captured and not replayed[1] and loss_rel < 1e-3 and image_abs < 1e-2}


@contextlib.contextmanager
def noting_replays(replayed: list[bool]):
    """Appends to `replayed`, after the `optimize` call inside, whether its step was ever replayed
    from a graph."""
    base = engine.StepRunner

    class Noting(base):
        def __call__(self, *inputs):
            out = super().__call__(*inputs)
            self.ever_replayed = getattr(self, "ever_replayed", False) or self.replaying
            runners.append(self)
            return out

    runners: list = []
    engine.StepRunner = Noting
    try:
        yield
    finally:
        engine.StepRunner = base
        replayed.append(any(getattr(r, "ever_replayed", False) for r in runners))


def time_reference(images, classifier, mae, target, config, device, seed) -> float:
    sync(device)
    start = time.perf_counter()
    _, losses = reference_optimize(images, classifier, target, config=config, mae=mae,
                                   streams=ImageStreams.for_batch(seed, images.shape[0]))
    sync(device)
    return (time.perf_counter() - start) / len(losses)


def measure(workload: Workload, batch: int, size: int, variants: list[Variant], args, device) -> list[dict]:
    """All variants and the reference on one (workload, batch, size); runs interleaved."""
    classifier, mae = models(workload, device)
    setup = Setup(classifier, mae)
    target, images = step_inputs(classifier, batch, size, device)
    # The reference is fp32; "auto" would mean bf16 autocast on CUDA for its numerical check.
    base = OptimizeConfig(steps=args.steps, autocast="off")
    ref_config = replace(base, steps=args.reference_steps or args.steps)
    check_seed = SEED + 1000

    # One step each: warm-up, numerical check, peak memory; FLOPs on the first uncompiled variant.
    ref: dict = {}
    setup.apply(None)
    if not args.no_reference:
        with peak_memory(device, ref):
            ref_result = reference_loss_and_grad(images, classifier, mae, target, base, check_seed)
        low = {v.autocast for v in variants if v.precision != "fp32"}
        ref_low = {a: reference_loss_and_grad(images, classifier, mae, target, replace(base, autocast=a), check_seed)
                   for a in low}
    rows = []
    flops = None
    working = []
    for variant in variants:
        config = variant.config(base)
        mem: dict = {}
        row = {"workload": workload.name, "batch": batch, "size": size, "variant": variant.name}
        count = flop_counter() if flops is None and not variant.compile else contextlib.nullcontext()
        try:
            setup.apply(variant)
            with peak_memory(device, mem), count:
                loss, grad = engine_loss_and_grad(images, classifier, mae, target, config, check_seed)
        except Exception as exc:  # e.g. torch.compile failing on this machine: report it, run the rest
            rows.append(row | {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}", "check_ok": False})
            print(f"{workload.name} b{batch} s{size} {variant.name}: {rows[-1]['error']}", flush=True)
            continue
        working.append(variant)
        if isinstance(count, FlopCounterMode):
            flops = count.get_total_flops()
        row |= {"peak_mb": mem["peak_mb"], "ref_peak_mb": ref.get("peak_mb")}
        if not args.no_reference:
            row |= compare(loss, grad, ref_result, ref_low.get(variant.autocast))
        if variant.graph:
            row |= graph_check(images, classifier, mae, target, config)
        if "loss_rel" in row or "graph_ok" in row:
            row["check_ok"] = passes(row, fp32_tolerances(device))
        rows.append(row)

    # Timed runs, interleaved: every round runs the reference and each variant once, in a
    # rotating order, so load changes on a shared machine hit all of them alike.
    impls: list[Variant | None] = ([] if args.no_reference else [None]) + working
    times: dict[str, list[float]] = {("reference" if v is None else v.name): [] for v in impls}
    steady: dict[str, list[float]] = {v.name: [] for v in impls if v is not None}
    for r in range(args.repeats):
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            setup.apply(impl)
            seed = SEED + r
            if impl is None:
                times["reference"].append(time_reference(images, classifier, mae, target, ref_config, device, seed))
            else:
                whole, steady_s = time_engine(images, classifier, mae, target, impl.config(base), device, seed)
                times[impl.name].append(whole)
                if steady_s is not None:
                    steady[impl.name].append(steady_s)
    setup.apply(None)

    peak_tflops = args.peak_tflops
    ref_ms = statistics.median(times["reference"]) * 1000 if "reference" in times else None
    for row in (r for r in rows if "error" not in r):
        ms = statistics.median(times[row["variant"]]) * 1000
        tflops = flops / (ms / 1000) / 1e12 if flops else None
        row |= {
            "ms_per_step": ms,
            "ms_all": [t * 1000 for t in times[row["variant"]]],
            "images_steps_per_s": batch / (ms / 1000),
            "ref_ms_per_step": ref_ms,
            "ref_ms_all": [t * 1000 for t in times.get("reference", [])],
            "speedup": ref_ms / ms if ref_ms else None,
            "gflop_per_step": flops / 1e9 if flops else None,
            "tflops": tflops,
            "peak_fraction": tflops / peak_tflops if tflops and peak_tflops else None,
        }
        if steady[row["variant"]]:
            steady_ms = statistics.median(steady[row["variant"]]) * 1000
            steady_tflops = flops / (steady_ms / 1000) / 1e12 if flops else None
            row |= {"steady_ms_per_step": steady_ms,
                    "steady_tflops": steady_tflops,
                    "steady_peak_fraction": steady_tflops / peak_tflops if steady_tflops and peak_tflops else None}
    return rows


def adam_timings(batch: int, size: int, device: torch.device, steps: int = 30) -> dict:
    """µs per Adam step on a stage's Fourier parameters: for-loop, foreach, fused."""
    out = {}
    shape = (batch, 3, size, size // 2 + 1, 2)
    for name, kwargs in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        p = torch.zeros(shape, device=device, requires_grad=True)
        p.grad = torch.randn(shape, device=device)
        try:
            opt = torch.optim.Adam([p], lr=0.05, **kwargs)
            opt.step()
        except (RuntimeError, ValueError) as exc:
            out[name] = f"unsupported: {str(exc).splitlines()[0][:80]}"
            continue
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        sync(device)
        out[name] = (time.perf_counter() - start) / steps * 1e6
    return out


def leak_check(workload: Workload, runs: int, device: torch.device, config: OptimizeConfig | None = None) -> dict:
    """`runs` consecutive optimize runs (default: 1 step each) with cached models: memory before
    vs after."""
    classifier, mae = models(workload, device)
    target, images = step_inputs(classifier, 1, 64, device)
    config = config or OptimizeConfig(steps=1)

    def one(i):
        optimize(images, classifier, target, config=config, mae=mae, streams=ImageStreams.for_batch(i, images.shape[0]))

    for i in range(5):
        one(i)
    sync(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_mb()
    for i in range(runs):
        one(i)
    sync(device)
    after = torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_mb()
    unit = "cuda_allocated_mb" if device.type == "cuda" else "rss_mb"
    scale = 2**20 if device.type == "cuda" else 1
    return {"workload": workload.name, "runs": runs, "steps": config.steps, "cuda_graph": config.cuda_graph,
            "measure": unit, "before": before / scale, "after": after / scale, "growth_mb": (after - before) / scale}


# ----------------------------------------------------------------------------------------------
# Reporting


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "device": str(device)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags"):
                value = value.strip()
                if key.strip() == "Flags":  # only the vector extensions that matter for matmuls
                    value = " ".join(f for f in value.split() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
                info[key.strip().lower().replace(" ", "_").replace("(s)", "s")] = value
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = os.getloadavg()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _fmt(value, spec: str, empty: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    return format(value, spec)


def table(rows: list[dict], device: torch.device) -> str:
    rate = "TFLOP/s" if device.type == "cuda" else "GFLOP/s"
    head = ("| workload | batch | size | variant | ms/step | steady ms/step | img·step/s | ref ms/step | vs ref | peak MB"
            f" | ref peak MB | GFLOP/step | {rate} | % bf16 peak | steady % peak | loss rel | grad rel / cos"
            " | same-precision cos | graph vs uncaptured (loss / image) | check |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t = r.get("tflops")
        shown_rate = t if device.type == "cuda" or t is None else t * 1000
        grad = f"{_fmt(r.get('grad_rel'), '.1e')} / {_fmt(r.get('grad_cos'), '.4f')}" if "grad_rel" in r else "-"
        check = "-" if "check_ok" not in r else ("ok" if r["check_ok"] else "FAIL")
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['batch']} | {r['size']} | {r['variant']} | {r['error'][:120]} |")
            continue
        graph = (f"{_fmt(r.get('graph_loss_rel'), '.1e')} / {_fmt(r.get('graph_image_abs'), '.1e')}"
                 if "graph_ok" in r else "-")
        if r.get("graph_captured") is False:
            graph = "not captured (see log)"
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['size']} | {r['variant']} | {_fmt(r['ms_per_step'], '.0f')}"
            f" | {_fmt(r.get('steady_ms_per_step'), '.1f')}"
            f" | {_fmt(r['images_steps_per_s'], '.2f')} | {_fmt(r.get('ref_ms_per_step'), '.0f')}"
            f" | {_fmt(r.get('speedup'), '.2f')}x | {_fmt(r['peak_mb'], '.0f')} | {_fmt(r.get('ref_peak_mb'), '.0f')}"
            f" | {_fmt(r.get('gflop_per_step'), '.1f')} | {_fmt(shown_rate, '.1f' if device.type == 'cuda' else '.0f')}"
            f" | {_fmt(r.get('peak_fraction') and 100 * r['peak_fraction'], '.1f')}"
            f" | {_fmt(r.get('steady_peak_fraction') and 100 * r['steady_peak_fraction'], '.1f')}"
            f" | {_fmt(r.get('loss_rel'), '.1e')} | {grad} | {_fmt(r.get('same_precision_grad_cos'), '.4f')}"
            f" | {graph} | {check} |"
        )
    return "\n".join(lines)


def memory_fits(rows: list[dict]) -> list[str]:
    """Least-squares peak = a + b * batch per (workload, size, variant), with the worst residual."""
    groups: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        if r.get("peak_mb") is not None and not math.isnan(r["peak_mb"]):
            groups.setdefault((r["workload"], r["size"], r["variant"]), []).append((r["batch"], r["peak_mb"]))
    out = []
    for (w, s, v), points in groups.items():
        if len({b for b, _ in points}) < 2:
            continue
        n = len(points)
        mb = sum(b for b, _ in points) / n
        mp = sum(p for _, p in points) / n
        slope = sum((b - mb) * (p - mp) for b, p in points) / sum((b - mb) ** 2 for b, _ in points)
        icpt = mp - slope * mb
        worst = max(abs(p - (icpt + slope * b)) / max(p, 1e-9) for b, p in points)
        out.append(f"{w} @ {s} {v}: peak ≈ {icpt:.0f} MB + {slope:.0f} MB x batch (worst residual {100 * worst:.0f} %)")
    return out


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="the 'quick' grid: a smoke test")
    p.add_argument("--grid", choices=sorted(GRIDS), help="preset grid (default: cpu on CPU, full on CUDA)")
    p.add_argument("--workloads", help="comma list of a,b,c (replaces the grid's rows with workloads x batches x sizes)")
    p.add_argument("--batches", help="comma list, e.g. 1,4,16")
    p.add_argument("--sizes", help="comma list of stage sides, e.g. 64,128,256")
    p.add_argument("--variants", help="comma list, e.g. fp32,fp32+cl,bf16+cl+compile")
    p.add_argument("--repeats", type=int, help="timed runs per implementation (interleaved)")
    p.add_argument("--steps", type=int, default=1, help="optimize steps per timed run (default 1; 4 or more also "
                   "gives the steady-state ms/step, e.g. 12 for graph variants: 3 warm-up steps, then capture)")
    p.add_argument("--reference-steps", type=int, help="steps per timed run of the reference (default: --steps)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--no-reference", action="store_true", help="skip the reference (no ratios, no check)")
    p.add_argument("--no-adam", action="store_true", help="skip the Adam for-loop/foreach/fused timings")
    p.add_argument("--leak-runs", type=int, help="also run N consecutive 1-step optimize runs of the first workload "
                   "at batch 1 and report memory growth (default: the grid's, 100 for cpu and gpu-peak)")
    p.add_argument("--peak-tflops", type=float, help="device peak for the '%% of peak' column (default: bf16 "
                   "dense peak looked up from the GPU name; none on CPU)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--report", metavar="JSON", help="print the tables of an earlier run's JSON and exit")
    p.add_argument("--json", default="benchmarks/results/speed.json", help="where to write the results")
    return p.parse_args(argv)


def resolve_grid(args, device):
    """(grid name, [(workload key, batches, sizes, [Variant])], repeats) from the preset and flags."""
    name = args.grid or ("quick" if args.quick else ("full" if device.type == "cuda" else "cpu"))
    grid = GRIDS[name]
    rows = grid["rows"]
    if args.workloads or args.batches or args.sizes:
        keys = [k.strip() for k in (args.workloads or "abc").replace(",", " ").split()] if args.workloads else list("abc")
        keys = [next((key for key, w in WORKLOADS.items() if k in (key, w.name)), k) for k in keys]
        unknown = [k for k in keys if k not in WORKLOADS]
        if unknown:
            raise SystemExit(f"Unknown workload(s) {unknown}: choose from {[(k, w.name) for k, w in WORKLOADS.items()]}.")
        batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else (1, 4, 16)
        sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else (64, 128, 256)
        variants = tuple(dict.fromkeys(v for row in rows for v in row[3]))  # every variant of the preset
        rows = [(k, batches, sizes, variants) for k in keys]
    if args.variants:
        rows = [(k, b, s, tuple(args.variants.split(","))) for k, b, s, _ in rows]
    rows = [(k, b, s, [Variant.parse(v) for v in vs]) for k, b, s, vs in rows]
    if args.leak_runs is None:
        args.leak_runs = grid.get("leak_runs", 0)
    return name, rows, args.repeats or grid["repeats"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(json.loads(Path(args.report).read_text()))
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid_name, rows_spec, args.repeats = resolve_grid(args, device)
    plan = [(WORKLOADS[k].name, b, s, [v.name for v in vs]) for k, b, s, vs in rows_spec]
    if args.dry_run:
        print(f"grid {grid_name}: {plan}; {args.repeats} timed runs")
        return 0
    if args.peak_tflops is None:
        args.peak_tflops = device_peak_tflops(device)
    command = "python -m benchmarks.speed " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine(device)
    print(f"# {command}\n# {json.dumps(info)}\n# grid {grid_name}: {plan}; {args.repeats} timed runs"
          f" x {args.steps} step(s) each", flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info,
              "grid": grid_name, "plan": plan,
              "repeats": args.repeats, "steps_per_run": args.steps, "peak_tflops": args.peak_tflops,
              "fp32_tolerances": fp32_tolerances(device),
              "rows": [], "adam": [], "leak": None}
    started = time.perf_counter()
    for key, batches, sizes, variants in rows_spec:
        for batch in batches:
            for size in sizes:
                t0 = time.perf_counter()
                rows = measure(WORKLOADS[key], batch, size, variants, args, device)
                result["rows"].extend(rows)
                for r in (r for r in rows if "error" not in r):
                    print(f"{r['workload']} b{batch} s{size} {r['variant']}: {r['ms_per_step']:.0f} ms/step"
                          f" (ref {_fmt(r.get('ref_ms_per_step'), '.0f')}, x{_fmt(r.get('speedup'), '.2f')}),"
                          f" peak {_fmt(r['peak_mb'], '.0f')} MB, check {r.get('check_ok', '-')}"
                          f" [{time.perf_counter() - t0:.0f} s]", flush=True)
                out.write_text(json.dumps(result, indent=1))
    if not args.no_adam:
        shapes = sorted({(b, s) for _, batches, sizes, _ in rows_spec for b in batches for s in sizes})
        result["adam"] = [{"batch": b, "size": s, "us_per_step": adam_timings(b, s, device)} for b, s in shapes]
    if args.leak_runs:
        result["leak"] = leak_check(WORKLOADS[rows_spec[0][0]], args.leak_runs, device)
        if device.type == "cuda" and any(v.graph for *_, variants in rows_spec for v in variants):
            # Each run captures a graph with its own memory pool (after 3 warm-up steps): freed?
            graphed = OptimizeConfig(steps=engine.GRAPH_WARMUP_STEPS + 2, cuda_graph=True)
            result["leak_graph"] = leak_check(WORKLOADS[rows_spec[0][0]], args.leak_runs, device, graphed)
    result["total_s"] = time.perf_counter() - started
    out.write_text(json.dumps(result, indent=1))

    return report(result)


def summary_at(rows: list[dict], batch: int) -> list[str]:
    """Per workload and variant at `batch`: the speed-up over the reference, median over stage sizes."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["batch"] == batch and r.get("speedup"):
            groups.setdefault((r["workload"], r["variant"]), []).append(r["speedup"])
    return [f"{w} {v}: {statistics.median(x):.2f}x (stage sizes: {', '.join(f'{s:.2f}' for s in x)})"
            for (w, v), x in groups.items()]


def report(result: dict) -> int:
    """Print the table and summaries of a result; 1 if a numerical check fails (re-evaluated)."""
    device = torch.device(result["machine"]["device"])
    tolerances = tuple(result.get("fp32_tolerances") or fp32_tolerances(device))
    for row in result["rows"]:
        if "loss_rel" in row or "graph_ok" in row:
            row["check_ok"] = passes(row, tolerances)
    print(f"\n{result['command']}\n\n" + table(result["rows"], device))
    at4 = summary_at(result["rows"], 4)
    if at4:
        print("\nSpeed-up over the reference at batch 4:\n" + "\n".join("- " + line for line in at4))
    fits = memory_fits(result["rows"])
    if fits:
        print("\nPeak memory vs batch:\n" + "\n".join("- " + f for f in fits))
    if result["adam"]:
        print("\nAdam step on the Fourier parameters, µs (for-loop / foreach / fused):")
        for a in result["adam"]:
            print(f"- batch {a['batch']} @ {a['size']}: " + " / ".join(_fmt(v, ".0f", str(v)) if isinstance(v, float)
                                                                     else str(v) for v in a["us_per_step"].values()))
    if result["leak"]:
        print(f"\nLeak check: {json.dumps(result['leak'])}")
    if result.get("leak_graph"):
        print(f"Leak check, captured runs: {json.dumps(result['leak_graph'])}")
    print(f"\n{len(result['rows'])} rows in {result.get('total_s', 0) / 60:.1f} min")
    failed = [r for r in result["rows"] if r.get("check_ok") is False]
    if failed:
        print(f"NUMERICAL CHECK FAILED for {len(failed)} row(s).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
