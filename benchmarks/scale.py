"""How `python -m cag_core dataset` scales with processes: images per second, same run, same work.

    python -m benchmarks.scale                         # CPU: 1 process x 1 thread, 1 x 2 threads, 2 x 1 (torchrun)
    python -m benchmarks.scale --images 16 --steps 10 --batch 4
    python -m benchmarks.scale --device cuda --procs 1,8 --classifier resnet50 --mae mae_visualize_vit_large.pth

Each configuration runs the real command (torchrun for several processes, gloo on CPUs, nccl on
CUDA) on the same images (classes 0..N-1, one image each, the default recipe with --steps per
stage) into a fresh folder. Throughput counts only the work: from the earliest rank's "start" log
line (models loaded, plan made) to the latest rank's last batch, so process start-up and model
loading are left out (a 50,000-image run amortizes them). Scaling efficiency is the rate of P
processes over P times the rate of one process with the same threads per process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) rank (\d+)/\d+ INFO (start|batch \d+/\d+)")


def work_window(out: Path) -> tuple[float, int]:
    """(seconds from the first rank's start to the last rank's last batch, batches) from the logs."""
    starts, ends, batches = [], [], 0
    for log in sorted((out / "logs").glob("rank-*.log")):
        for line in log.read_text().splitlines():
            match = STAMP.match(line)
            if not match:
                continue
            when = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if match.group(3) == "start":
                starts.append(when)
            else:
                ends.append(when)
                batches += 1
    if not starts or not ends:
        raise RuntimeError(f"no start/batch lines in {out / 'logs'}")
    return max(ends) - min(starts), batches


def run_config(procs: int, threads: int, args, scratch: Path) -> dict:
    out = scratch / f"p{procs}-t{threads}"
    command = ["dataset", "--classes", f"0-{args.images - 1}", "--per-class", "1", "--out", str(out),
               "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device, "--threads",
               str(threads), "--quiet"]
    for spec in args.classifier:
        command += ["--classifier", spec]
    if args.mae:
        command += ["--mae", args.mae]
    if procs == 1:
        launcher = [sys.executable, "-m", "cag_core"]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                    "-m", "cag_core"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(launcher + command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{procs} x {threads}: exit {done.returncode}\n{done.stderr[-3000:]}")
    seconds, batches = work_window(out)
    return {"processes": procs, "threads_per_process": threads, "images": args.images, "batches": batches,
            "work_seconds": round(seconds, 2), "wall_seconds": round(wall, 2),
            "images_per_second": round(args.images / seconds, 4), "load_after": round(os.getloadavg()[0], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12, help="images per configuration (one per class)")
    parser.add_argument("--steps", type=int, default=10, help="steps per stage (the default recipe has 100)")
    parser.add_argument("--batch", type=int, default=2, help="images per batch per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--procs", default="1,2", help="process counts to measure")
    parser.add_argument("--threads", default=None,
                        help="threads per process to measure (CPU; default: 1, and also all cores for 1 process)")
    parser.add_argument("--classifier", action="append", default=[])
    parser.add_argument("--mae", default=None)
    parser.add_argument("--json", default=None, help="write results here (default benchmarks/results/scale_<device>.json)")
    args = parser.parse_args(argv)
    procs = [int(p) for p in args.procs.split(",")]
    cores = os.cpu_count() or 1
    configs = [(p, 1) for p in procs]
    if args.device == "cpu" and args.threads is None and cores > 1:
        configs.insert(1, (1, cores))
    elif args.threads is not None:
        configs = [(p, int(t)) for p in procs for t in args.threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cag-scale-") as scratch:
        for procs_, threads in configs:
            row = run_config(procs_, threads, args, Path(scratch))
            rows.append(row)
            print(f"{procs_} process(es) x {threads} thread(s): {row['images_per_second']:.3f} images/s "
                  f"({row['work_seconds']} s of work, load {row['load_after']})", flush=True)
    base = {r["threads_per_process"]: r["images_per_second"] for r in rows if r["processes"] == 1}
    for r in rows:
        one = base.get(r["threads_per_process"])
        several = r["processes"] > 1 and one
        r["scaling_efficiency"] = round(r["images_per_second"] / (r["processes"] * one), 3) if several else None
    result = {"command": "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": dt.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{cores} cores", "device": args.device, "steps_per_stage": args.steps, "rows": rows}
    path = Path(args.json or ROOT / "benchmarks" / "results" / f"scale_{args.device.split(':')[0]}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| processes | threads each | images/s | scaling efficiency | work s | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        eff = "-" if r["scaling_efficiency"] is None else f"{r['scaling_efficiency']:.2f}"
        print(f"| {r['processes']} | {r['threads_per_process']} | {r['images_per_second']:.3f} | {eff} | "
              f"{r['work_seconds']} | {r['wall_seconds']} |")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
