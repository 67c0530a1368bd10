"""The engine's speed-ups compute the same step: oneDNN linear, BatchNorm folding, deferred loss
reads, weights cast once for autocast."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cag_core.optimize as optimize_module
from cag_core import cpu_linear
from cag_core.batchnorm_folding import fold_batchnorm
from cag_core.errors import NonFiniteLossError
from cag_core.mae import MAEConfig, mae_from_config
from cag_core.optimize import OptimizeConfig, optimize
from cag_core.precast import weights_in_autocast_dtype
from cag_core.transfer import to_device
from tiny import tiny_classifier

TINY_MAE = MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
FAST = OptimizeConfig(steps=6, lr=0.05)


def _images(batch=2, seed=0):
    return torch.rand(batch, 3, 24, 24, generator=torch.Generator().manual_seed(seed))


# -- oneDNN linear -------------------------------------------------------------------------------

needs_onednn = pytest.mark.skipif(not cpu_linear.available(), reason="torch without oneDNN linear")


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 48), (2, 7, 48)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_linear_matches_f_linear_forward_and_backward(shape, with_bias):
    layer = nn.Linear(48, 40, bias=with_bias).requires_grad_(False)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    expected = layer(x)
    (expected * torch.linspace(-1, 1, 40)).sum().backward()
    expected_grad, x.grad = x.grad, None
    with cpu_linear.cpu_linear_mode():
        got = layer(x)
    assert got.grad_fn is not None and "OneDNN" in type(got.grad_fn).__name__
    (got * torch.linspace(-1, 1, 40)).sum().backward()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(x.grad, expected_grad, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_linear_takes_strided_inputs_and_weights():
    gen = torch.Generator().manual_seed(1)
    w, b = torch.randn(40, 48, generator=gen), torch.randn(40, generator=gen)
    for x in (torch.randn(48, 7, generator=gen).t(), torch.randn(2, 48, 5, generator=gen).transpose(1, 2),
              torch.randn(7, 96, generator=gen)[:, ::2]):
        for weight in (w, w.t().contiguous().t()):
            assert torch.allclose(cpu_linear.linear(x, weight, b), F.linear(x, weight, b), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_linear_leaves_trainable_weights_and_autocast_to_torch():
    """Weights that train need their own gradient, bf16 needs autocast's casts: both go to F.linear."""
    layer = nn.Linear(16, 8)  # trainable
    x = torch.randn(3, 16)
    with cpu_linear.cpu_linear_mode():
        y = layer(x)
        y.sum().backward()
    assert "OneDNN" not in type(y.grad_fn).__name__ and layer.weight.grad is not None
    frozen = nn.Linear(16, 8).requires_grad_(False)
    with cpu_linear.cpu_linear_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert frozen(x).dtype == torch.bfloat16


def test_onednn_linear_is_off_for_other_devices_and_by_switch(monkeypatch):
    assert cpu_linear.cpu_linear_mode("meta").__class__.__name__ == "nullcontext"
    monkeypatch.setenv(cpu_linear.ENV_SWITCH, "0")
    cpu_linear.available.cache_clear()
    try:
        assert not cpu_linear.available()
        assert cpu_linear.cpu_linear_mode().__class__.__name__ == "nullcontext"
    finally:
        monkeypatch.delenv(cpu_linear.ENV_SWITCH)
        cpu_linear.available.cache_clear()


@needs_onednn
def test_multihead_attention_in_the_mode_matches():
    """open_clip's attention calls F.linear inside torch's MultiheadAttention: routed, same values."""
    mha = nn.MultiheadAttention(32, 4, batch_first=True).requires_grad_(False).eval()
    x = torch.randn(2, 5, 32, requires_grad=True)
    expected = mha(x, x, x, need_weights=False)[0]
    with cpu_linear.cpu_linear_mode():
        got = mha(x, x, x, need_weights=False)[0]
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


# -- BatchNorm folding ---------------------------------------------------------------------------


def test_folded_classifier_has_no_batchnorm_and_the_same_logits():
    classifier = tiny_classifier()
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    folded = classifier.folded_model()
    assert folded is not classifier.model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in classifier.model.modules())  # original untouched
    expected, _ = classifier.logits_and_features(x)
    got, _ = classifier.logits_and_features(x, fast=True)
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())  # fp32 rounding
    # Outside the module tree: state dict and parameters are the original's alone.
    assert not any("_folded" in k for k in classifier.state_dict())
    assert sum(p.numel() for p in classifier.parameters()) == sum(p.numel() for p in classifier.model.parameters())


def test_folded_copy_is_channels_last_on_cpu_and_rebuilt_after_moves():
    classifier = tiny_classifier()
    folded = classifier.folded_model()
    conv = next(m for m in folded.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    classifier.to("cpu", torch.float64)
    assert classifier.folded_model() is not folded
    assert next(classifier.folded_model().parameters()).dtype == torch.float64


class _SkipAroundBN(nn.Module):
    """conv -> bn, but the conv output also feeds a skip: folding it would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.2, 3)
            self.bn.weight.uniform_(0.5, 2)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


def test_a_fold_that_would_change_the_function_is_refused():
    model = _SkipAroundBN().eval()
    assert fold_batchnorm(model, torch.rand(2, 3, 8, 8)) is None
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        plain[1].running_var.uniform_(0.5, 2)
    folded = fold_batchnorm(plain, torch.rand(2, 3, 8, 8))
    assert folded is not None and isinstance(folded[1], nn.Identity)
    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(folded(x), plain(x), atol=1e-5)


def test_fast_path_only_for_fp32_on_the_cpu():
    assert optimize_module.fast_classifier_path(torch.device("cpu"), "auto")
    assert optimize_module.fast_classifier_path(torch.device("cpu"), "off")
    assert not optimize_module.fast_classifier_path(torch.device("cpu"), "bf16")
    assert not optimize_module.fast_classifier_path(torch.device("cuda"), "off")


def test_the_engine_step_runs_the_folded_copy_on_the_cpu(monkeypatch):
    classifier = tiny_classifier()
    calls = []
    folded = classifier.folded_model()
    folded.conv_stem.register_forward_pre_hook(lambda *_: calls.append("folded"))
    optimize(_images(), classifier, "class 0", config=replace(FAST, steps=2))
    assert calls == ["folded"] * 2 * 2  # 2 steps x one forward per image (2 images)
    optimize(_images(), classifier, "class 0", config=replace(FAST, steps=2, autocast="bf16"))
    assert calls == ["folded"] * 4


def test_bn_statistics_loss_runs_on_the_folded_copy(monkeypatch):
    """With the BN prior on, the CPU step still runs the folded copy, and the prior counts as it
    does on the original model (the losses agree to fp32 rounding)."""
    classifier = tiny_classifier()
    config = replace(FAST, steps=2, bn_weight=1.0)
    calls = []
    classifier.folded_model().conv_stem.register_forward_pre_hook(lambda *_: calls.append("folded"))
    with_bn = optimize(_images(), classifier, "class 0", config=config).losses
    assert calls, "the BN prior no longer takes the fast path"
    without = optimize(_images(), classifier, "class 0", config=replace(config, bn_weight=0.0)).losses
    assert with_bn[0] > without[0]
    monkeypatch.setattr(optimize_module, "fast_classifier_path", lambda device, autocast: False)
    assert optimize(_images(), classifier, "class 0", config=config).losses == pytest.approx(with_bn, rel=1e-4)


# -- deferred loss read (what a GPU does), exercised on the CPU ----------------------------------


@pytest.fixture
def deferred(monkeypatch):
    monkeypatch.setattr(optimize_module, "defer_loss_read", lambda device: True)


def _run(callback=None, **kwargs):
    return optimize(_images(), tiny_classifier(), "class 3", config=replace(FAST, **kwargs),
                    mae=mae_from_config(TINY_MAE, seed=0), seed=5,
                    callback=callback)


def test_deferred_loss_read_gives_the_same_run(deferred):
    seen = []
    result = _run(lambda step, total, images, loss: seen.append((step, loss)))
    optimize_module.defer_loss_read = lambda device: False  # the plain path, same process
    plain = _run()
    assert [s for s, _ in seen] == list(range(1, FAST.steps + 1))
    assert result.losses == plain.losses == [loss for _, loss in seen]
    assert torch.equal(result.images, plain.images)


def test_deferred_stop_request_lands_one_step_late(deferred):
    seen = []

    def callback(step, total, images, loss):
        seen.append(step)
        return step == 3

    result = _run(callback)
    assert seen == [1, 2, 3] and result.stopped_early and len(result.losses) == 3


def test_deferred_nan_is_still_refused(deferred):
    classifier = tiny_classifier()
    with torch.no_grad():
        classifier.model.classifier.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1"):
        optimize(_images(), classifier, "class 0", config=FAST)


# -- weights cast once for autocast ----------------------------------------------------------------


def test_precast_weights_give_the_same_bf16_run(monkeypatch):
    """bf16 autocast with the Linear/Conv weights cast once equals casting them every step, bit for bit."""
    classifier, mae = tiny_classifier(), mae_from_config(TINY_MAE, seed=0)
    config = replace(FAST, steps=4, autocast="bf16")
    seen_dtypes = []
    classifier.model.conv_stem.register_forward_pre_hook(lambda m, _: seen_dtypes.append(m.weight.dtype))

    def run():
        return optimize(_images(), classifier, "class 3", config=config, mae=mae, seed=5)

    cast_once = run()
    assert set(seen_dtypes) == {torch.bfloat16}
    monkeypatch.setattr(optimize_module, "weights_in_autocast_dtype", lambda models, dtype: contextlib.nullcontext())
    every_step = run()
    assert cast_once.losses == every_step.losses
    assert torch.equal(cast_once.images, every_step.images)


def test_precast_with_a_clip_text_classifier_under_inference_mode(monkeypatch):
    """open_clip's attention (MultiheadAttention, out_proj swapped, in_proj cast by autocast), called
    the way ComfyUI calls nodes: the same bf16 run with and without the swap."""
    import open_clip

    from cag_core.text_classifier import classifier_from_clip
    from test_text_classifier import make_tiny_clip

    classifier = classifier_from_clip(make_tiny_clip(), open_clip.get_tokenizer("ViT-B-32"), "a red fox")
    config = replace(FAST, steps=3, autocast="bf16")

    def run():
        with torch.inference_mode():
            return optimize(_images(seed=1), classifier, classifier.default_target, config=config, seed=0)

    cast_once = run()
    monkeypatch.setattr(optimize_module, "weights_in_autocast_dtype", lambda models, dtype: contextlib.nullcontext())
    every_step = run()
    assert cast_once.losses == every_step.losses and torch.equal(cast_once.images, every_step.images)
    assert {p.dtype for p in classifier.parameters()} == {torch.float32}


def test_precast_puts_the_fp32_weights_back_even_after_a_cancel():
    classifier, mae = tiny_classifier(), mae_from_config(TINY_MAE, seed=0)
    before = {name: p for name, p in list(classifier.named_parameters()) + list(mae.named_parameters())}

    def cancel(*_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(_images(), classifier, "class 3", config=replace(FAST, autocast="bf16"), mae=mae, callback=cancel)
    after = dict(list(classifier.named_parameters()) + list(mae.named_parameters()))
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert all(p.dtype == torch.float32 for p in after.values())


def test_precast_leaves_norm_layers_and_trainable_weights_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv1d(4, 4, 1), nn.Linear(4, 2))
    model[3].requires_grad_(True)
    for p in list(model[0].parameters()) + list(model[1].parameters()) + list(model[2].parameters()):
        p.requires_grad_(False)
    with weights_in_autocast_dtype([model], torch.bfloat16):
        assert model[0].weight.dtype == model[0].bias.dtype == model[2].weight.dtype == torch.bfloat16
        assert model[1].weight.dtype == torch.float32 and model[3].weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with weights_in_autocast_dtype([model], None):
        assert model[0].weight.dtype == torch.float32


def test_to_device_keeps_cpu_tensors_and_converts_dtype():
    t = torch.rand(3, 4)
    assert to_device(t, torch.device("cpu")) is t
    assert to_device(t, torch.device("cpu"), torch.float64).dtype == torch.float64
