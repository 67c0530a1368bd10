"""The optimization step on tiny models: the loss falls, runs are reproducible, hooks and faults are handled."""

from dataclasses import replace

import pytest
import torch

from cag_core.augment import NO_AUGMENT, AugmentConfig, random_views
from cag_core.streams import ImageStreams
from cag_core.errors import CaGError, NonFiniteLossError
from cag_core.losses import BatchNormStats
from cag_core.mae import MAEConfig, mae_from_config
from cag_core.classifier import as_ensemble
from cag_core.optimize import OptimizeConfig, optimize, step_bn_stats
from cag_core.parameterization import parameterize
from tiny import tiny_classifier

FAST = OptimizeConfig(steps=15, augment=AugmentConfig(crops=2))
TINY_MAE = MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


def _images(batch=2, size=24, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("param", ["fourier", "pixels"])
def test_loss_falls_and_images_stay_in_range(param):
    """Both parameterizations lower the target loss and return [0, 1] images of the input shape.
    Without augmentation: the tiny random classifier's loss on random crops is noise (0 to 14
    from one step to the next), the whole image's is not."""
    config = replace(FAST, parameterization=param, steps=25, augment=NO_AUGMENT)
    result = optimize(_images(), tiny_classifier(), "class 3", config=config)
    assert result.images.shape == (2, 3, 24, 24) and result.images.dtype == torch.float32
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert sum(result.losses[-5:]) / 5 < result.losses[0] * 0.7


def test_same_seed_same_images_bit_for_bit():
    """Masks, views and steps come from the generator: the same seed reproduces the images exactly."""
    mae = mae_from_config(TINY_MAE, seed=0)
    runs = [
        optimize(_images(), tiny_classifier(), "class 1", config=FAST, mae=mae, seed=s).images
        for s in (5, 5, 6)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_input_is_not_modified_and_inference_tensors_are_accepted():
    """Called under inference mode like a ComfyUI node, optimize still gets gradients and leaves its input alone."""
    classifier = tiny_classifier()
    with torch.inference_mode():
        images = _images()
        before = images.clone()
        result = optimize(images, classifier, "class 2", config=replace(FAST, steps=3))
    assert torch.equal(images, before)
    assert not torch.equal(result.images, before)


def test_callback_sees_every_step_and_can_stop():
    """The callback gets (step, total, images, loss) and returning True ends the run early."""
    seen = []

    def callback(step, total, images, loss):
        seen.append((step, total, tuple(images.shape), loss))
        return step == 4

    result = optimize(_images(), tiny_classifier(), "class 0", config=FAST, callback=callback)
    assert [s[0] for s in seen] == [1, 2, 3, 4] and seen[0][1] == 15 and seen[0][2] == (2, 3, 24, 24)
    assert result.stopped_early and len(result.losses) == 4


def test_interrupt_from_callback_removes_bn_hooks():
    """An exception from the callback (ComfyUI's Cancel) propagates and leaves no hooks behind."""
    classifier = tiny_classifier()

    def cancel(step, total, images, loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(_images(), classifier, "class 0", config=replace(FAST, bn_weight=0.01), callback=cancel)
    assert all(not m._forward_hooks for m in classifier.modules())
    assert optimize(_images(), classifier, "class 0", config=replace(FAST, steps=2)).images.shape[0] == 2


def test_nan_loss_stops_with_a_message():
    """A non-finite loss raises NonFiniteLossError instead of returning a garbage image."""
    classifier = tiny_classifier()
    with torch.no_grad():
        classifier.model.classifier.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1"):
        optimize(_images(), classifier, "class 0", config=FAST)


def test_all_losses_and_the_mae_run_together():
    """Diversity, BN statistics and TV priors and an MAE in the loop combine without error."""
    config = replace(FAST, steps=4, diversity_weight=0.1, bn_weight=0.01, tv_weight=0.01, mask_ratio=0.5)
    result = optimize(_images(3), tiny_classifier(), "class 1\nclass 2", config=config, mae=mae_from_config(TINY_MAE, seed=1))
    assert result.images.shape == (3, 3, 24, 24) and all(torch.isfinite(torch.tensor(result.losses)))


def test_bn_stats_loss_is_zero_for_running_stats():
    """The BN-statistics distance is zero when a layer's input matches its running statistics,
    and it is measured per image (here 2 images of 2048 views each)."""
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(1.0)
    x = torch.randn(4096, 3, 2, 2) + 0.5
    with BatchNormStats([bn], views=2048) as stats:
        bn(x)
        assert stats.take(2).max().item() < 0.1
        bn(torch.cat([x[:2048], x[2048:] * 3]))
        near, far = stats.take(2).tolist()
        assert near < 0.1 and far > 1
    assert not bn._forward_hooks


def test_bn_stats_every_other_step():
    """every=2 measures steps 0, 2, 4, ... at twice the distance (the same mean push) and leaves the
    other steps unmeasured: no moments stored, take() None."""
    bn = torch.nn.BatchNorm2d(3).eval()
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    with BatchNormStats([bn], views=2) as every_step:
        bn(x)
        once = every_step.take(2)
    taken = []
    with BatchNormStats([bn], views=2, every=2) as stats:
        for _ in range(5):
            bn(x)
            measured = bool(stats._moments)
            loss = stats.take(2)
            taken.append(loss)
            assert measured == (loss is not None)
    assert [t is not None for t in taken] == [True, False, True, False, True]
    assert torch.allclose(taken[0], 2 * once) and torch.equal(taken[0], taken[4])


def test_bn_every_in_optimize(monkeypatch):
    """bn_every: the BN prior's loss enters the step loss every n-th step only; n = 1 is the prior
    every step; a CUDA graph (which replays one captured step) measures every step."""
    classifier = tiny_classifier()
    base = replace(FAST, steps=4, bn_weight=5.0, tv_weight=0.0)
    plain = optimize(_images(2), classifier, "class 1\nclass 2", config=replace(base, bn_weight=0.0))
    every = optimize(_images(2), classifier, "class 1\nclass 2", config=base)
    alternate = optimize(_images(2), classifier, "class 1\nclass 2", config=replace(base, bn_every=2))
    # Step 0 is measured in both (at 2x the weight with bn_every 2), step 1 only with bn_every 1.
    assert alternate.losses[0] > every.losses[0] > plain.losses[0]
    assert every.losses[1] > plain.losses[1] - 1e-6 and not torch.equal(alternate.images, every.images)
    cpu = torch.device("cpu")
    assert step_bn_stats(replace(base, bn_every=3), as_ensemble(classifier), cpu).every == 3
    monkeypatch.setattr("cag_core.optimize.captures", lambda device, static: static)  # as on a GPU
    assert step_bn_stats(replace(base, bn_every=3, cuda_graph=True), as_ensemble(classifier), cpu).every == 1
    with pytest.raises(CaGError, match="bn_every"):
        replace(base, bn_every=0)
    with pytest.raises(CaGError, match="bn_every"):
        replace(base, bn_every=1.5)


def test_bn_stats_on_the_folded_copy_equal_the_original():
    """The folded copy's convolutions map their outputs back to the BatchNorm inputs: each image's
    BN-statistics loss is the original model's to fp32 rounding, in any chunking of the forwards."""
    classifier = tiny_classifier()
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    per_model = []
    with torch.no_grad():
        for fast in (False, True):
            stats = BatchNormStats([classifier.model_for(fast)], views=2)
            with stats:
                classifier.logits_and_features(images, fast=fast)
                stats.end_forward()
                whole = stats.take(3)
                for part in images.split(2):
                    classifier.logits_and_features(part, fast=fast)
                    stats.end_forward()
                assert torch.allclose(stats.take(3), whole, rtol=1e-6)
            per_model.append(whole)
    assert classifier.model_for(True) is not classifier.model
    assert torch.allclose(per_model[0], per_model[1], rtol=1e-4) and per_model[0].std() > 0


def test_ensemble_optimizes_all_members():
    """An ensemble lowers the loss of each member."""
    from cag_core.classifier import combine

    a, b = tiny_classifier(seed=0), tiny_classifier(seed=1)
    images = _images()
    result = optimize(images, combine(a, b), "class 4", config=replace(FAST, steps=25, augment=NO_AUGMENT))
    for member in (a, b):
        with torch.no_grad():
            before = torch.nn.functional.cross_entropy(member(images), torch.tensor([4, 4]))
            after = torch.nn.functional.cross_entropy(member(result.images), torch.tensor([4, 4]))
        assert after < before


def test_fourier_parameterization_starts_at_the_given_image():
    """The Fourier parameterization of an image reproduces that image, odd sizes included."""
    images = _images(2, 17).clamp(0.05, 0.95)
    assert torch.allclose(parameterize(images, "fourier")(), images, atol=1e-5)


def test_views_are_one_batched_resampling():
    """All views come out in one tensor, image-major; no augmentation is a plain resize."""
    images = _images(2, 20)
    views = random_views(images, (16, 16), AugmentConfig(crops=3), ImageStreams.for_batch(0, 2))
    assert views.shape == (6, 3, 16, 16)
    plain = random_views(images, (20, 20), NO_AUGMENT, ImageStreams.for_batch(0, 2))
    assert torch.equal(plain, images)


def test_views_sample_at_fp32_positions_under_autocast():
    """Under bf16 autocast the views are the fp32 views: affine_grid's matrix product ran in bf16
    before, moving sampling positions by up to about a pixel at 256 px."""
    images = _images(2, 256)
    config = AugmentConfig(crops=3)
    plain = random_views(images, (224, 224), config, ImageStreams.for_batch(1, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = random_views(images, (224, 224), config, ImageStreams.for_batch(1, 2))
    assert under.dtype == torch.float32 and torch.equal(under, plain)


def test_full_crop_without_jitter_is_identity_and_flip_mirrors():
    """A full-size sharp, clean crop with no jitter returns the image; a forced flip mirrors it."""
    images = _images(1, 16)
    same = random_views(images, (16, 16), AugmentConfig(crops=1, crop_scale=(1, 1), crop_ratio=(1, 1), jitter=0, flip=False,
                                                       blur=0.0, noise=0.0), ImageStreams.for_batch(0, 1))
    assert torch.allclose(same, images, atol=1e-5)
    views = random_views(images, (16, 16), AugmentConfig(crops=8, crop_scale=(1, 1), crop_ratio=(1, 1), jitter=0, flip=True,
                                                         blur=0.0, noise=0.0), ImageStreams.for_batch(0, 1))
    flipped = [torch.allclose(v, images[0].flip(-1), atol=1e-5) for v in views]
    unflipped = [torch.allclose(v, images[0], atol=1e-5) for v in views]
    assert all(f or u for f, u in zip(flipped, unflipped)) and any(flipped) and any(unflipped)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"mask_ratio": 1.0}, "mask_ratio"),
     ({"parameterization": "wavelet"}, "fourier"), ({"tv_weight": float("nan")}, "tv_weight")],
)
def test_bad_settings_are_refused_before_work(kwargs, match):
    """Unusable settings fail in OptimizeConfig with the allowed values."""
    with pytest.raises(CaGError, match=match):
        OptimizeConfig(**kwargs)


def test_wrong_image_shape_and_target_size():
    """Images must be [B, 3, H, W], and a Target must match the batch and classes."""
    with pytest.raises(CaGError, match="batch, 3"):
        optimize(torch.rand(3, 8, 8), tiny_classifier(), "class 0", config=FAST)
    from cag_core.targets import parse_target

    with pytest.raises(CaGError, match="3 images"):
        optimize(_images(3), tiny_classifier(), parse_target("class 0", [f"class {i}" for i in range(10)], 2), config=FAST)
