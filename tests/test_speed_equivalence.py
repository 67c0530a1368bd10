"""The batched engine step equals the straightforward reference, runs do not leak, the benchmark runs.

benchmarks/reference_step.py is the per-image, one-mask-at-a-time, fp32 reference that
`python -m benchmarks.speed` times the engine against; these tests hold the two to the same
numbers on tiny models, and run the benchmark's own code path end to end on tiny workloads.
"""

from __future__ import annotations

import contextlib

import ctypes
import json
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import profile_step, speed
from benchmarks.reference_step import reference_loss, reference_optimize
from cag_core.augment import NO_AUGMENT, AugmentConfig
from cag_core.classifier import as_ensemble
from cag_core.mae import MAEConfig, mae_from_config
from cag_core.optimize import (OptimizeConfig, _step_loss, draw_step_randoms, image_parameterization, optimize,
                               step_bn_stats, views_per_forward)
from cag_core.streams import ImageStreams, stage_purpose
from cag_core.targets import parse_target
from tiny import tiny_classifier

ROOT = Path(__file__).resolve().parents[1]
TINY_MAE = MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def _engine(images, classifier, target, config, mae, seed, chunk=None):
    image_fn = image_parameterization(images.clone(), config)
    randoms = draw_step_randoms(mae, config, ImageStreams.for_batch(seed, images.shape[0]))
    bn_stats = step_bn_stats(config, as_ensemble(classifier), images.device)  # as optimize() builds it
    with bn_stats if bn_stats is not None else contextlib.nullcontext():
        loss = _step_loss(image_fn(), as_ensemble(classifier), target, mae, config, classifier.input_size,
                          config.augment.crops, bn_stats, chunk, randoms).sum()
    loss.backward()
    return loss.detach(), image_fn.params[0].grad


def _reference(images, classifier, target, config, mae, seed):
    params = image_parameterization(images.clone(), config).params[0].detach().clone().requires_grad_(True)
    loss = reference_loss(params, tuple(images.shape[-2:]), classifier, target, config, mae,
                          ImageStreams.for_batch(seed, images.shape[0]))
    loss.backward()
    return loss.detach(), params.grad


@pytest.mark.parametrize("priors", [0.0, 0.05], ids=["no-priors", "bn-tv"])
@pytest.mark.parametrize("with_mae", [True, False], ids=["mae", "no-mae"])
@pytest.mark.parametrize("param", ["fourier", "pixels"])
def test_batched_step_equals_per_image_reference(with_mae, param, priors):
    """Same masks, views and weights: the batched step's loss and gradient equal the per-image loop's,
    also with the BN-statistics prior (on the folded copy in the engine, on the plain model's
    BatchNorm layers in the reference) and total variation."""
    classifier = tiny_classifier()
    mae = mae_from_config(TINY_MAE, seed=0) if with_mae else None
    images = torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    target = parse_target("class 1\nclass 2:0.5 | class 4:0.5\nclass 3 | class 5:-1", classifier.class_names, 3)
    config = OptimizeConfig(parameterization=param, augment=AugmentConfig(crops=3), bn_weight=priors, tv_weight=priors)
    loss, grad = _engine(images, classifier, target, config, mae, seed=5)
    ref_loss, ref_grad = _reference(images, classifier, target, config, mae, seed=5)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 1e-4


@pytest.mark.parametrize("with_mae", [True, False], ids=["mae", "no-mae"])
def test_noisy_views_step_equals_per_image_reference(with_mae):
    """View noise (the fixed field rolled per view, one gather in the engine, torch.roll per view in
    the reference) keeps the engine's step equal to the plain one."""
    classifier = tiny_classifier()
    mae = mae_from_config(TINY_MAE, seed=0) if with_mae else None
    images = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(4))
    target = parse_target("class 1\nclass 3", classifier.class_names, 2)
    config = OptimizeConfig(augment=AugmentConfig(crops=3, noise=0.3))
    loss, grad = _engine(images, classifier, target, config, mae, seed=9)
    ref_loss, ref_grad = _reference(images, classifier, target, config, mae, seed=9)
    clean_loss, _ = _engine(images, classifier, target, replace(config, augment=replace(config.augment, noise=0.0)),
                            mae, seed=9)
    assert not torch.allclose(loss, clean_loss)  # the noise reached the classifier
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 1e-4


def test_views_in_chunks_give_the_same_step():
    """The CPU path classifies views in chunks; loss and gradient equal the all-at-once step (for
    ResNet-50 and EfficientNet-Lite0 at 224 px bit for bit; a tiny net at 32 px may round differently)."""
    classifier = tiny_classifier()
    images = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    target = parse_target("class 1", classifier.class_names, 3)
    config = OptimizeConfig(augment=AugmentConfig(crops=4))
    loss, grad = _engine(images, classifier, target, config, None, seed=2)
    for chunk in (1, 5, 8):
        chunk_loss, chunk_grad = _engine(images, classifier, target, config, None, seed=2, chunk=chunk)
        assert torch.allclose(loss, chunk_loss, rtol=1e-5)
        assert float((grad - chunk_grad).norm() / grad.norm()) < 1e-4


def test_views_per_forward():
    """One image's views per forward on CPUs, all at once on accelerators."""
    ensemble = as_ensemble(tiny_classifier())  # 32 px input
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert views_per_forward(OptimizeConfig(), cpu, ensemble) == OptimizeConfig().augment.crops
    assert views_per_forward(OptimizeConfig(augment=AugmentConfig(crops=5)), cpu, ensemble) == 5
    assert views_per_forward(OptimizeConfig(), cuda, ensemble) is None
    assert views_per_forward(OptimizeConfig(view_batch=3), cuda, ensemble) == 3
    # The BN-statistics loss is per image: it chunks like the rest.
    assert views_per_forward(OptimizeConfig(bn_weight=0.1), cpu, ensemble) == OptimizeConfig().augment.crops
    assert views_per_forward(OptimizeConfig(bn_weight=0.1, view_batch=3), cpu, ensemble) == 3


def test_reference_follows_the_engine_without_augmentation_and_masking():
    """NO_AUGMENT and mask ratio 0 draw no random numbers in either implementation."""
    classifier = tiny_classifier()
    mae = mae_from_config(TINY_MAE, seed=0)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = parse_target("class 0", classifier.class_names, 2)
    config = OptimizeConfig(augment=NO_AUGMENT, mask_ratio=0.0)
    loss, grad = _engine(images, classifier, target, config, mae, seed=0)
    ref_loss, ref_grad = _reference(images, classifier, target, config, mae, seed=0)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 1e-4


@pytest.mark.parametrize("change", [{"bn_every": 2}, {"image_std": 3.6}], ids=["bn_every", "image_std"])
def test_reference_refuses_what_it_does_not_implement(change):
    """The reference measures the BN prior every step on the plain Fourier image: a default stage
    config (bn_every 2, a fixed contrast) is refused, not compared wrongly."""
    classifier = tiny_classifier()
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = parse_target("class 0", classifier.class_names, 1)
    config = OptimizeConfig(augment=NO_AUGMENT, mask_ratio=0.0, bn_weight=0.001, **change)
    with pytest.raises(ValueError, match=next(iter(change))):
        _reference(images, classifier, target, config, None, seed=0)


def test_channels_last_is_opt_in_and_matches_within_rounding():
    """channels_last is off by default; switched on, the step matches the default layout to fp32 rounding."""
    classifier = tiny_classifier()
    assert not classifier.channels_last
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    target = parse_target("class 2", classifier.class_names, 2)
    config = OptimizeConfig()
    loss, grad = _engine(images, classifier, target, config, None, seed=1)
    classifier.use_channels_last(True)
    assert classifier.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    cl_loss, cl_grad = _engine(images, classifier, target, config, None, seed=1)
    assert torch.allclose(loss, cl_loss, rtol=1e-5)
    assert float((grad - cl_grad).norm() / grad.norm()) < 1e-4
    classifier.use_channels_last(False)
    assert classifier.model.conv_stem.weight.is_contiguous()


def test_reference_optimize_tracks_the_engine_over_steps():
    """A few Adam steps of each from the same start stay close (Adam amplifies only rounding)."""
    classifier = tiny_classifier()
    mae = mae_from_config(TINY_MAE, seed=0)
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    target = parse_target("class 6", classifier.class_names, 2)
    config = OptimizeConfig(steps=3, augment=AugmentConfig(crops=2))
    engine = optimize(images, classifier, target, config=config, mae=mae, seed=9)
    _, ref_losses = reference_optimize(images, classifier, target, config=config, mae=mae,
                                       streams=ImageStreams.for_batch(9, 2, stage_purpose(24, 24)))
    assert engine.losses[0] == pytest.approx(ref_losses[0], rel=1e-5)
    assert engine.losses == pytest.approx(ref_losses, rel=1e-3)


def _rss_mb() -> float:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
def test_hundred_runs_with_cached_models_do_not_grow_memory():
    """100 consecutive optimize runs reusing the models leave RSS where it was (graphs are freed)."""
    classifier = tiny_classifier()
    mae = mae_from_config(TINY_MAE, seed=0)
    target = parse_target("class 1", classifier.class_names, 2)
    config = OptimizeConfig(steps=2, augment=AugmentConfig(crops=2))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(i):
        return optimize(images, classifier, target, config=config, mae=mae, seed=i)

    for i in range(10):  # warm-up: allocator pools, lazily built kernels
        run(i)
    before = _rss_mb()
    for i in range(100):
        run(i)
    growth = _rss_mb() - before
    assert growth < 8, f"RSS grew by {growth:.1f} MB over 100 runs"


# -- the benchmark's own code path, on tiny workloads ---------------------------------------------


@pytest.fixture
def tiny_workloads(monkeypatch):
    monkeypatch.setitem(speed.WORKLOADS, "t", speed.Workload("tiny-mae+tiny-net", "test_efficientnet", TINY_MAE))
    monkeypatch.setitem(speed.WORKLOADS, "u", speed.Workload("tiny-net", "test_efficientnet", None))
    yield
    speed._MODELS.clear()


def test_benchmark_cpu_path_writes_table_and_json(tiny_workloads, tmp_path, capsys):
    """The one command runs every column on the CPU: timings vs the reference, memory, FLOPs, checks."""
    out = tmp_path / "speed.json"
    code = speed.main(["--workloads", "t,u", "--batches", "1,2", "--sizes", "16", "--variants", "fp32,fp32+cl,bf16",
                       "--repeats", "1", "--leak-runs", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 2 * 2 * 3
    for row in result["rows"]:
        assert row["check_ok"] and row["ms_per_step"] > 0 and row["speedup"] > 0 and row["gflop_per_step"] > 0
        assert row["peak_mb"] >= 0 and row["ref_peak_mb"] >= 0
    assert result["leak"]["runs"] == 3 and result["adam"]
    assert "| tiny-mae+tiny-net | 2 | 16 | bf16 |" in printed and "Peak memory vs batch" in printed


def test_a_failing_variant_is_reported_and_the_rest_still_run(tiny_workloads, tmp_path, monkeypatch, capsys):
    """If e.g. torch.compile fails on a machine, its row says why, the others are measured, exit 1."""

    def broken(fn, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(speed.torch, "compile", broken)
    monkeypatch.setattr(speed.engine, "_COMPILED_FORWARD", None)  # compiled by an earlier test, maybe
    out = tmp_path / "speed.json"
    code = speed.main(["--workloads", "u", "--batches", "1", "--sizes", "16", "--variants", "fp32,fp32+compile",
                       "--repeats", "1", "--no-adam", "--leak-runs", "0", "--json", str(out)])
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert code == 1 and "no compiler here" in rows["fp32+compile"]["error"]
    assert rows["fp32"]["check_ok"] and rows["fp32"]["ms_per_step"] > 0
    assert "RuntimeError: no compiler here" in capsys.readouterr().out


def test_graph_variant_is_checked_against_its_uncaptured_run(tiny_workloads, tmp_path, monkeypatch):
    """A +graph row: the (on a CPU, emulated) captured run matches the uncaptured one and reports
    a steady-state time; if the capture did not happen, the row fails its check."""
    out = tmp_path / "speed.json"
    args = ["--workloads", "t", "--batches", "2", "--sizes", "16", "--variants", "fp32+graph,bf16+graph",
            "--repeats", "1", "--steps", "5", "--reference-steps", "1", "--no-adam", "--leak-runs", "0",
            "--json", str(out)]  # the leak check (a CPU runs no captured one) has its own tests
    assert speed.main(args) == 0
    for row in json.loads(out.read_text())["rows"]:
        assert row["graph_captured"] and row["graph_ok"] and row["graph_loss_rel"] == 0.0, row
        assert row["steady_ms_per_step"] > 0
    monkeypatch.setattr(speed, "emulated_capture", contextlib.nullcontext)  # a CPU then captures nothing
    assert speed.main(args) == 1
    rows = json.loads(out.read_text())["rows"]
    assert not any(r["graph_captured"] or r["check_ok"] for r in rows)


def test_flop_count_includes_attention():
    """The CPU flash-attention kernels are counted (torch's counter only knows the CUDA ones)."""
    q = torch.rand(1, 2, 10, 8, requires_grad=True)
    with speed.flop_counter() as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    forward = 2 * (2 * 2 * 10 * 8 * 10)  # q k^T and (softmax) v, batch x heads = 2
    assert counter.get_total_flops() >= 3 * forward  # forward + a backward of about twice that


def test_gpu_check_script_commands_parse(tmp_path):
    """Every benchmark command in gpu_check.sh is valid (dry run; the script itself needs CUDA)."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    commands = re.findall(r"-m benchmarks\.speed ([^\n|]*)", script)
    assert len(commands) >= 2
    for command in commands:
        args = [a.replace("${OUT}", str(tmp_path)) for a in shlex.split(command) if not a.startswith("2>")]
        assert "--device" in args and speed.main(args + ["--dry-run"]) == 0, command
    profiles = re.findall(r"-m benchmarks\.profile_step ([^\n|]*)", script)
    assert len(profiles) == 1
    args = profile_step.parse_args([a for a in shlex.split(profiles[0]) if not a.startswith("2>")])
    assert args.device == "cuda" and args.workload in speed.WORKLOADS
    assert all(speed.Variant.parse(v) for v in args.variants.split(","))


def test_variant_names_parse():
    assert speed.Variant.parse("bf16+cl+compile") == speed.Variant("bf16+cl+compile", "bf16", True, True)
    assert speed.Variant.parse("fp32").autocast == "off"
    with pytest.raises(SystemExit):
        speed.Variant.parse("int8")
    assert replace(speed.Variant.parse("fp16"), name="x").precision == "fp16"


def test_fold_variant_runs_the_folded_classifier_at_any_precision(tiny_workloads, tmp_path):
    """+fold: the BatchNorm-folded copy (the CPU fp32 default) under bf16 too, for measuring
    whether it pays off elsewhere; every other implementation, the reference included, runs the
    engine's own choice."""
    fold = speed.Variant.parse("bf16+cl+fold")
    assert fold.fold and fold.channels_last and not speed.Variant.parse("bf16+cl").fold
    classifier, mae = speed.models(speed.WORKLOADS["u"], torch.device("cpu"))
    setup = speed.Setup(classifier, mae)
    cpu = torch.device("cpu")
    try:
        setup.apply(fold)
        assert speed.engine.fast_classifier_path(cpu, "bf16")
        setup.apply(speed.Variant.parse("bf16"))
        assert not speed.engine.fast_classifier_path(cpu, "bf16") and speed.engine.fast_classifier_path(cpu, "off")
        setup.apply(fold)
        setup.apply(None)
        assert not speed.engine.fast_classifier_path(cpu, "bf16")
    finally:
        setup.apply(None)
    out = tmp_path / "speed.json"
    assert speed.main(["--workloads", "u", "--batches", "2", "--sizes", "16", "--variants", "bf16,bf16+fold",
                       "--repeats", "1", "--no-adam", "--leak-runs", "0", "--json", str(out)]) in (0, 1)
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["bf16+fold"]["grad_rel"] != rows["bf16"]["grad_rel"]  # a different classifier path ran
    assert speed.engine.fast_classifier_path is speed._ENGINE_FAST_PATH
