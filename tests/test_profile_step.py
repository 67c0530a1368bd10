"""benchmarks/profile_step.py: kernel names sort into kinds, the profiled window holds whole steps,
the FLOPs by kind add up to the benchmark's count, and the command writes its table and JSON."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import profile_step, speed
from cag_core.mae import MAEConfig

TINY_MAE = MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(speed.WORKLOADS, "t", speed.Workload("tiny-mae+tiny-net", "test_efficientnet", TINY_MAE))
    yield speed.WORKLOADS["t"]
    speed._MODELS.clear()


@pytest.mark.parametrize("name, kind", [
    # CUDA kernel names as the profiler reports them (cuDNN, cuBLAS, flash attention, cuFFT, ...)
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    ("sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
    ("void at::native::(anonymous namespace)::conv_depthwise2d_backward_kernel<float>", "convolution"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1", "matmul"),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTN", "matmul"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>", "matmul"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>", "attention"),
    ("fmha_cutlassB_bf16_aligned_64x64_k64_sm80", "attention"),
    ("void regular_fft_factor<256u, float2>", "fft"),
    ("void at::native::grid_sampler_2d_backward_kernel<float, long>", "resampling"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
    ("triton_red_fused_native_layer_norm_0", "compiled (triton)"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>", "normalization"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "element-wise"),
    ("Memcpy HtoD (Pinned -> Device)", "copies"),
    ("void nchwToNhwcKernel<__nv_bfloat16>", "copies"),
    # CPU operators
    ("aten::convolution_backward", "convolution"),
    ("mkldnn::_linear_pointwise", "matmul"),
    ("aten::addmm", "matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::add_", "element-wise"),
    ("autograd::engine::evaluate_function: AddmmBackward0", "autograd (host)"),
    ("HardtanhBackward0", "autograd (host)"),
    ("aten::hardtanh_backward", "element-wise"),
    ("some_custom_kernel", "other"),
])
def test_names_sort_into_kinds(name, kind):
    assert profile_step.kind_of(name) == kind


def test_flops_by_kind_add_up_to_the_step_count(tiny):
    """The kinds cover every FLOP the benchmark counts for the step: matmuls, convolutions, attention."""
    variant = speed.Variant.parse("fp32")
    by_kind = profile_step.step_flops_by_kind(tiny, 2, 16, variant, torch.device("cpu"))
    assert by_kind["matmul"] > 0 and by_kind["convolution"] > 0 and by_kind["attention"] > 0
    assert by_kind.get("other", 0) == 0
    again = profile_step.step_flops_by_kind(tiny, 2, 16, variant, torch.device("cpu"))
    assert again == by_kind  # nothing outside the step (model building, fold checks) in the count


@pytest.mark.parametrize("variant", ["fp32", "fp32+graph"])
def test_window_holds_whole_steps(tiny, variant):
    """Windows of 2 and 3 steps see the same operators the same number of times per step: the
    window starts and ends at step boundaries and leaves setup (and a graph's warm-up) out."""
    cpu, v = torch.device("cpu"), speed.Variant.parse(variant)
    two = profile_step.profile_variant(tiny, 2, 16, v, cpu, steps=2)
    three = profile_step.profile_variant(tiny, 2, 16, v, cpu, steps=3)
    assert two.steps == 2 and three.steps == 3
    per_step = {name: calls / two.steps for name, calls in two.calls.items()}
    assert per_step == {name: calls / three.steps for name, calls in three.calls.items()}
    assert all(calls == int(calls) for calls in per_step.values())
    assert per_step["aten::convolution_backward"] > 0 and per_step["aten::_fft_c2r"] >= 1
    for b in (two, three):
        assert not b.replayed
        assert 0 < b.busy_ms_per_step <= b.wall_ms_per_step
        assert abs(sum(b.by_kind().values()) - b.busy_ms_per_step) < 1e-6


def test_command_writes_table_and_json(tiny, tmp_path, capsys):
    out = tmp_path / "profile.json"
    code = profile_step.main(["--device", "cpu", "--workload", "t", "--batch", "2", "--size", "16",
                              "--variants", "fp32,bf16+graph", "--steps", "2", "--top", "5", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = json.loads(out.read_text())["results"]
    assert [r["variant"] for r in results] == ["fp32", "bf16+graph"]
    for r in results:
        assert r["step_gflop"] > 0 and r["busy_ms_per_step"] > 0 and len(r["top"]) >= 5
        assert r["replayed_graph"] is False  # nothing is captured on a CPU, and the report says so
    assert printed.count("was not replayed as a CUDA graph") == 1
    assert "| convolution |" in printed and "## tiny-mae+tiny-net batch 2 stage 16 bf16+graph (cpu)" in printed


def test_a_failing_variant_is_reported_and_the_rest_still_run(tiny, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("profiler unavailable")

    real = profile_step.profile_variant
    monkeypatch.setattr(profile_step, "profile_variant",
                        lambda w, b, s, v, *a: broken() if v.graph else real(w, b, s, v, *a))
    out = tmp_path / "profile.json"
    code = profile_step.main(["--device", "cpu", "--workload", "t", "--batch", "1", "--size", "16",
                              "--variants", "fp32+graph,fp32", "--steps", "2", "--json", str(out)])
    results = json.loads(out.read_text())["results"]
    assert code == 1 and "profiler unavailable" in results[0]["error"] and results[1]["busy_ms_per_step"] > 0


def test_cuda_breakdown_counts_device_work_once():
    """Kernels and copies count by duration; the GPU-side mirrors of annotated host ranges (which
    span those kernels) and host events do not."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import Interval

    def event(name, device_type, start, end, annotation=False):
        return SimpleNamespace(name=name, device_type=device_type, time_range=Interval(start, end),
                               is_user_annotation=annotation, self_cpu_time_total=end - start)

    events = [
        event("sm90_xmma_gemm_bf16bf16", DeviceType.CUDA, 0, 300),
        event("void at::native::vectorized_elementwise_kernel<4>", DeviceType.CUDA, 300, 400),
        event("Memcpy HtoD (Pinned -> Device)", DeviceType.CUDA, 400, 410),
        event("ProfilerStep#5", DeviceType.CUDA, 0, 1000, annotation=True),
        event("cudaGraphLaunch", DeviceType.CPU, 0, 20),
    ]
    b = profile_step.breakdown_from_events(events, torch.device("cuda"), steps=2, wall_s=0.001)
    assert b.busy_ms_per_step == pytest.approx(0.41 / 2)
    assert b.by_kind() == pytest.approx({"matmul": 0.15, "element-wise": 0.05, "copies": 0.005})
    assert b.wall_ms_per_step == pytest.approx(0.5)


def test_a_replayed_graph_is_reported_as_such(tiny):
    """With capture and replay emulated on the CPU (benchmarks/graph_emulator.py), the profiled
    graph variant says it replayed, and its window still holds whole steps."""
    with speed.emulated_capture():
        b = profile_step.profile_variant(tiny, 2, 16, speed.Variant.parse("fp32+graph"), torch.device("cpu"), steps=2)
    assert b.replayed and 0 < b.busy_ms_per_step <= b.wall_ms_per_step
