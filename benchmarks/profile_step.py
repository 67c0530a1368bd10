"""Where the time of a steady-state optimize step goes: a torch.profiler breakdown, per step.

    python -m benchmarks.profile_step --device cuda --workload b --batch 64 --variants bf16+cl,bf16+cl+graph
    python -m benchmarks.profile_step --workload c --batch 4          # on the CPU: aten ops' own time

`benchmarks.speed` says how fast a step is; this says why. It runs the engine's `optimize` with the
profiler recording only steps after the first `--skip` (setup, warm-up and a graph's capture left
out) and reports, per step:
- wall ms (between the engine's per-step loss reads) and device-busy ms (CUDA: the sum of kernel,
  memcpy and memset durations; CPU: the sum of the operators' own times), whose ratio says whether
  the device waits for the host (launch-bound) or computes;
- that time by kind of work (matmul, convolution, attention, FFT, resampling (views, resizes), normalization,
  element-wise, optimizer, copies, ...) and, where the step's FLOPs are counted
  (torch.utils.flop_counter on one step), the TFLOP/s each kind achieves while it runs;
- the kernels (CUDA) or operators (CPU) that take the most time.
Kinds come from kernel names (cuBLAS, cuDNN, flash attention, cuFFT, Triton ... spell them
differently), so the split is approximate: a kernel the patterns do not know lands in "other".
On CUDA only device activity is recorded, to add as little host time as possible to an eager
step's launches; on the CPU the profiler's own cost per operator makes the wall time here a few
% longer than in benchmarks.speed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from benchmarks import speed
from cag_core.optimize import GRAPH_WARMUP_STEPS, OptimizeConfig, optimize
from cag_core.streams import ImageStreams

# Kinds of work, first match wins; patterns cover kernel names (CUDA) and operator names (CPU).
KINDS: tuple[tuple[str, str], ...] = (
    ("autograd (host)", r"(?-i:^autograd::|Backward\d+$)"),  # CPU: the autograd engine's own time
    ("optimizer", r"adam|multi_tensor_apply|_foreach_"),
    ("compiled (triton)", r"triton"),
    ("attention", r"flash|fmha|attention|attn|sdpa"),
    ("convolution", r"conv|fprop|dgrad|wgrad|implicit_gemm|cudnn|winograd|depthwise"),
    ("matmul", r"gemm|cutlass|nvjet|cublas|\bmm\b|aten::mm|addmm|bmm|matmul|linear|_linear_pointwise"),
    ("fft", r"fft"),
    ("resampling", r"grid_sampler|affine_grid|grid_sample|upsample|bicubic|bilinear"),
    ("normalization", r"norm"),
    ("softmax", r"softmax"),
    ("copies", r"memcpy|memset|copy|cat_|catarray|\bcat\b|aten::cat|index|gather|scatter|clone|contiguous|"
               r"nchwtonhwc|nhwctonchw"),
    ("element-wise", r"elementwise|pointwise|reduce|unrolled|aten::(add|mul|sub|div|gelu|relu|hardtanh|sigmoid|"
                     r"clamp|sum|mean|pow|sqrt|exp|log|neg|where|fill|zero|threshold)"),
)
_KIND_RES = tuple((kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in KINDS)

# FLOP-counted operators by kind (torch.utils.flop_counter's keys are OpOverloadPackets).
FLOP_KINDS = {"mm": "matmul", "addmm": "matmul", "bmm": "matmul", "baddbmm": "matmul", "_linear_pointwise": "matmul",
              "convolution": "convolution", "convolution_backward": "convolution", "_convolution": "convolution"}


def kind_of(name: str) -> str:
    for kind, pattern in _KIND_RES:
        if pattern.search(name):
            return kind
    return "other"


def flop_kind(op_name: str) -> str:
    """'aten.mm' -> 'matmul'; every scaled-dot-product attention op -> 'attention'."""
    short = op_name.split(".")[-1] if op_name.count(".") else op_name
    if "attention" in short:
        return "attention"
    return FLOP_KINDS.get(short, "other")


@dataclass
class Breakdown:
    """Device time per step by kernel/operator name, from one profiled window of `steps` steps."""

    steps: int
    wall_s: float  # wall time of the window
    replayed: bool = False  # whether the step ran as a replayed CUDA graph (a failed capture falls back)
    times_us: dict[str, float] = field(default_factory=dict)  # name -> total µs in the window
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, us: float) -> None:
        self.times_us[name] = self.times_us.get(name, 0.0) + us
        self.calls[name] = self.calls.get(name, 0) + 1

    @property
    def busy_ms_per_step(self) -> float:
        return sum(self.times_us.values()) / 1000 / self.steps

    @property
    def wall_ms_per_step(self) -> float:
        return self.wall_s * 1000 / self.steps

    def by_kind(self) -> dict[str, float]:
        """ms per step by kind, largest first."""
        out: dict[str, float] = {}
        for name, us in self.times_us.items():
            kind = kind_of(name)
            out[kind] = out.get(kind, 0.0) + us / 1000 / self.steps
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def top(self, n: int) -> list[tuple[str, float, float]]:
        """(name, ms per step, calls per step) of the n largest."""
        rows = sorted(self.times_us.items(), key=lambda kv: -kv[1])[:n]
        return [(name, us / 1000 / self.steps, self.calls[name] / self.steps) for name, us in rows]


def breakdown_from_events(events, device: torch.device, steps: int, wall_s: float) -> Breakdown:
    """CUDA: every device-side event (kernels, memcpy, memset) by its duration, leaving out the
    ranges the profiler mirrors onto the GPU timeline for annotated host ranges (its step marks,
    "Optimizer.step"), which span kernels counted already. CPU: every operator and recorded range
    by its own time (not the time of what it called), so nothing is counted twice; the profiler's
    per-step range is left out (its own time is the Python between ops)."""
    out = Breakdown(steps, wall_s)
    for event in events:
        if device.type == "cuda":
            if event.device_type == DeviceType.CUDA and not getattr(event, "is_user_annotation", False):
                out.add(event.name, event.time_range.elapsed_us())
        elif event.device_type == DeviceType.CPU and not event.name.startswith("ProfilerStep"):
            out.add(event.name, event.self_cpu_time_total)
    return out


def step_flops_by_kind(workload: speed.Workload, batch: int, size: int, variant: speed.Variant,
                       device: torch.device) -> dict[str, float]:
    """FLOPs of one step (forward + backward) by kind, counted on the eager step."""
    classifier, mae = speed.models(workload, device)
    setup = speed.Setup(classifier, mae)
    target, images = speed.step_inputs(classifier, batch, size, device)
    config = replace(variant.config(OptimizeConfig(autocast="off")), compile=False, cuda_graph=False)
    counter = speed.flop_counter()
    try:
        setup.apply(variant)  # builds and checks the folded classifier (CPU) before the count
        with counter:
            speed.engine_loss_and_grad(images, classifier, mae, target, config, speed.SEED)
    finally:
        setup.apply(None)
    out: dict[str, float] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        kind = flop_kind(str(op))
        out[kind] = out.get(kind, 0.0) + flops
    return out


def profile_variant(workload: speed.Workload, batch: int, size: int, variant: speed.Variant, device: torch.device,
                    steps: int = 5, skip: int | None = None) -> Breakdown:
    """Profiles `steps` steady-state steps of one optimize run, after `skip` steps (by default 2,
    and for a graph its warm-up and capture too)."""
    if skip is None:
        skip = GRAPH_WARMUP_STEPS + 2 if variant.graph else 2
    if skip < 1 or steps < 1:
        raise ValueError(f"skip and steps must be at least 1, got {skip} and {steps}")
    classifier, mae = speed.models(workload, device)
    setup = speed.Setup(classifier, mae)
    target, images = speed.step_inputs(classifier, batch, size, device)
    # One step more than the window: on GPUs the engine reads a step's loss after queueing the next.
    config = variant.config(OptimizeConfig(steps=skip + steps + 1, autocast="off"))
    # On CUDA only the device side is recorded: recording every operator on the host too would
    # slow down the eager step's launches, which are what an eager GPU step waits for.
    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    stamps: list[float] = []
    window: list = []

    # Step n of the profiler ends at the n-th loss read; recorded: reads skip .. skip + steps.
    plan = schedule(wait=skip - 1, warmup=1, active=steps, repeat=1)
    replayed: list[bool] = []
    try:
        setup.apply(variant)
        with (profile(activities=activities, schedule=plan, on_trace_ready=lambda p: window.append(p.events())) as prof,
              speed.noting_replays(replayed)):
            def on_step(*_):  # called at the engine's loss read, which waits for that step's work
                stamps.append(time.perf_counter())
                prof.step()

            optimize(images, classifier, target, config=config, mae=mae,
                     streams=ImageStreams.for_batch(speed.SEED, images.shape[0]), callback=on_step)
    finally:
        setup.apply(None)
    if not window or len(stamps) < skip + steps:
        raise RuntimeError(f"profiled window incomplete: {len(stamps)} steps read, {skip + steps} needed")
    out = breakdown_from_events(window[0], device, steps, stamps[skip - 1 + steps] - stamps[skip - 1])
    out.replayed = replayed[0]
    return out


def report(result: dict, top_n: int = 15) -> str:
    """Markdown: the step's summary line, the kinds table and the top kernels/operators."""
    busy, wall = result["busy_ms_per_step"], result["wall_ms_per_step"]
    gflop = result["step_gflop"]
    peak = result.get("peak_tflops")
    rates = f"{gflop / wall:.1f} TFLOP/s on the wall clock, {gflop / busy:.1f} while busy" if busy else ""
    if peak and busy:
        rates += f" ({100 * gflop / wall / peak:.1f} % / {100 * gflop / busy / peak:.1f} % of the {peak:.0f} TFLOP/s peak)"
    lines = [f"## {result['workload']} batch {result['batch']} stage {result['size']} {result['variant']} "
             f"({result['device']})", ""]
    if "graph" in result["variant"].split("+") and not result["replayed_graph"]:
        lines.append("The step was not replayed as a CUDA graph (nothing to capture on a CPU; on a GPU the capture "
                     "failed and the engine ran it eagerly: see the log).")
    if not result["events_per_step"]:
        lines.append("No device events were recorded in the window (this profiler may not trace these launches, "
                     "e.g. graph replays).")
    lines += [f"wall {wall:.1f} ms/step; device busy {busy:.1f} ms/step ({100 * busy / wall:.0f} % of the wall time); "
             f"{result['events_per_step']:.0f} device events per step; {gflop:.1f} GFLOP per step: {rates}.",
             "", "| kind | ms/step | % of busy | GFLOP/step | TFLOP/s while running |", "|---|---|---|---|---|"]
    for kind, ms in result["by_kind_ms"].items():
        flops = result["flops_by_kind"].get(kind)
        rate = f"{flops / 1e9 / ms:.2f}" if flops and ms > 0 else "-"
        lines.append(f"| {kind} | {ms:.2f} | {100 * ms / busy:.1f} | {'-' if not flops else format(flops / 1e9, '.1f')}"
                     f" | {rate} |")
    lines += ["", f"| top {top_n} by time | ms/step | calls/step | kind |", "|---|---|---|---|"]
    for name, ms, calls in result["top"][:top_n]:
        short = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{short}` | {ms:.2f} | {calls:.1f} | {kind_of(name)} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workload", default="b", choices=sorted(speed.WORKLOADS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--variants", default="bf16+cl,bf16+cl+graph", help="comma list, as in benchmarks.speed")
    p.add_argument("--steps", type=int, default=5, help="steady-state steps profiled per variant")
    p.add_argument("--skip", type=int, help="steps before the window (default: 2, or warm-up + capture + 1 for graphs)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", default="benchmarks/results/profile_step.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    workload = speed.WORKLOADS[args.workload]
    info = speed.machine(device)
    results, failed = [], False
    for text in args.variants.split(","):
        variant = speed.Variant.parse(text)
        head = {"workload": workload.name, "batch": args.batch, "size": args.size, "variant": variant.name,
                "device": info.get("gpu", device.type)}
        try:
            flops = step_flops_by_kind(workload, args.batch, args.size, variant, device)
            b = profile_variant(workload, args.batch, args.size, variant, device, args.steps, args.skip)
        except Exception as exc:  # one variant failing (a capture, the profiler) still leaves the others
            failed = True
            results.append(head | {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"})
            print(f"{variant.name}: {results[-1]['error']}", flush=True)
            continue
        results.append(head | {
            "steps": b.steps, "replayed_graph": b.replayed,
            "wall_ms_per_step": b.wall_ms_per_step, "busy_ms_per_step": b.busy_ms_per_step,
            "events_per_step": sum(b.calls.values()) / b.steps, "by_kind_ms": b.by_kind(), "flops_by_kind": flops,
            "step_gflop": sum(flops.values()) / 1e9, "peak_tflops": speed.device_peak_tflops(device),
            "top": b.top(max(args.top, 40)),
        })
        print(report(results[-1], args.top) + "\n", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.profile_step " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.json).write_text(json.dumps({"command": command, "machine": info, "results": results}, indent=1))
    print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
