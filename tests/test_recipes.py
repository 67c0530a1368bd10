"""Named recipes and the engine features they use: the phase parameterization, centred crops."""

from dataclasses import replace

import pytest
import torch

from cag_core.augment import (
    AugmentConfig, add_view_noise, blur_views, noise_field, random_views, view_blurs, view_noises, view_thetas,
)
from cag_core.streams import ImageStreams
from cag_core.errors import CaGError
from cag_core.optimize import OptimizeConfig, optimize
from cag_core.parameterization import _COLOR, NATURAL_STD, _logit, natural_magnitude, parameterize
from cag_core.progressive import ProgressiveConfig
from cag_core.recipes import RECIPES, get_recipe, list_recipes
from tiny import tiny_classifier


def _decorrelated(images01):
    return torch.einsum("bchw,dc->bdhw", _logit(images01), torch.linalg.inv(_COLOR))


# ---- recipes ---------------------------------------------------------------------------------


def test_lucid_steep_std_is_the_default():
    """'lucid_steep_std' is what the pack ships as its default; 'lucid_steep' (the default on
    2026-12-07 until then) differs from it only in the BN prior every step and a free contrast;
    'lucid_smoothed' (the default from the
    evening of 2026-12-06) differs from it only in Lucid's 1/f spectrum, 'lucid_coarse' (the default
    for most of 2026-12-06) from that only in the clean views, 'lucid_centered_bn' (the default of 2026-12-02)
    from that only in the stages (64 -> 128 -> 256, 3 x 100 steps, the same 300) and the sharp views,
    'lucid_centered_bn50' (opt-in) from that only in the 64 px stage's steps, 'lucid_centered' (the
    default of 2026-12-01) only in the priors, and 'lucid' (before) also in where crops land."""
    default = ProgressiveConfig()
    assert get_recipe("lucid_steep_std") == default
    assert default.stage.bn_every == 2 and default.stage.image_std == 3.6
    steep = get_recipe("lucid_steep")
    assert replace(steep, stage=replace(steep.stage, bn_every=2, image_std=3.6)) == default
    assert steep.stage.decay_power == 1.5 and steep.stage.bn_every == 1 and steep.stage.image_std is None
    default = get_recipe("lucid_smoothed")  # the rest of this test walks back from it
    assert default.stage.decay_power == 1.0 and replace(default, stage=replace(default.stage, decay_power=1.5)) == steep
    assert default.sizes == (32, 64, 128, 256) and default.stage.augment.blur == 4.0
    assert default.stage.augment.noise == 0.3
    assert default.stage.bn_weight > 0 and default.stage.tv_weight > 0
    coarse = get_recipe("lucid_coarse")
    assert coarse.stage.augment.noise == 0.0
    assert replace(coarse, stage=replace(coarse.stage, augment=replace(coarse.stage.augment, noise=0.3))) == default
    bn = get_recipe("lucid_centered_bn")
    assert bn.sizes == (64, 128, 256) and bn.stage.augment.blur == 0.0 and sum(bn.steps) == sum(default.steps)
    assert replace(bn, sizes=default.sizes, steps=default.steps,
                   stage=replace(bn.stage, augment=replace(bn.stage.augment, blur=4.0))) == coarse
    assert get_recipe("lucid_centered_bn50") == replace(bn, steps=(50, 100, 100))
    centered = get_recipe("lucid_centered")
    assert centered.stage.bn_weight == 0 and centered.stage.tv_weight == 0
    assert replace(centered, stage=replace(centered.stage, bn_weight=default.stage.bn_weight,
                                           tv_weight=default.stage.tv_weight)) == bn
    lucid = get_recipe("lucid")
    assert lucid.stage.augment.center_std is None
    assert replace(lucid, stage=replace(lucid.stage, augment=replace(lucid.stage.augment, center_std=0.4))) \
        == centered


def test_get_recipe_returns_a_copy_with_overrides():
    """Overrides change the copy only; the stored recipe stays as it was."""
    stored = RECIPES["lucid"]
    copy = get_recipe("lucid", sizes=(32, 64), steps=(5,))
    assert copy.sizes == (32, 64) and copy.steps == (5,)
    assert RECIPES["lucid"] is stored and stored.sizes == (64, 128, 256)


def test_every_recipe_builds_its_stages():
    """Each registered recipe is a valid ProgressiveConfig whose stages can be built."""
    for name in list_recipes():
        assert len(get_recipe(name).stage_configs()) == len(get_recipe(name).sizes)


@pytest.mark.parametrize("call, message", [(lambda: get_recipe("lucd"), "Available: lucid"),
                                           (lambda: get_recipe("lucid", step=3), "Allowed: ")])
def test_bad_names_say_what_is_allowed(call, message):
    with pytest.raises(CaGError, match=message):
        call()


# ---- the phase parameterization --------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(32, 32), (24, 31)])
def test_natural_magnitude_sets_the_standard_deviation(h, w):
    """Any phases with these magnitudes give an image of the requested per-channel spread."""
    magnitude = natural_magnitude(h, w, std=(1.0, 2.0, 0.5))
    phase = 6.3 * torch.rand(4, 3, h, w // 2 + 1, generator=torch.Generator().manual_seed(0))
    image = torch.fft.irfft2(torch.polar(magnitude.expand_as(phase), phase), s=(h, w), norm="ortho")
    std = image.std(dim=(-2, -1)).mean(0)
    assert torch.allclose(std, torch.tensor([1.0, 2.0, 0.5]), rtol=0.1)
    assert magnitude[:, 0, 0].abs().max() == 0


def test_phase_image_has_natural_contrast_from_any_start():
    """A near-gray start and a random start both come out with a photo's spread: no gray veil."""
    gray = (0.5 + 0.01 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    for start in (gray, torch.rand(2, 3, 32, 32)):
        std = _decorrelated(parameterize(start, "phase")()).std(dim=(-2, -1))
        assert torch.allclose(std, torch.tensor(NATURAL_STD).expand_as(std), rtol=0.02)


def test_phase_image_reproduces_an_image_with_natural_magnitudes():
    """Starting from its own output (natural magnitudes already), the parameterization is exact."""
    first = parameterize(torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(2)), "phase")()
    again = parameterize(first.detach(), "phase")()
    assert torch.allclose(again, first, atol=1e-4)


def test_phase_image_keeps_the_mean_colour():
    """The mean colour of the start survives (only its magnitudes are replaced)."""
    reddish = torch.zeros(1, 3, 32, 32)
    reddish[:, 0] = 0.8
    reddish[:, 1:] = 0.3
    mean = parameterize(reddish, "phase")().mean(dim=(-2, -1))[0]
    assert mean[0] > 0.65 and mean[1] < 0.45 and mean[2] < 0.45


def test_phase_optimization_lowers_the_loss():
    """Optimizing only phases and mean colour still moves a tiny classifier toward the target."""
    config = OptimizeConfig(steps=30, lr=0.1, parameterization="phase", decay_power=None,
                            augment=AugmentConfig(crops=2, blur=0.0, noise=0.0))
    result = optimize(torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)), tiny_classifier(),
                      "class 3", config=config)
    assert result.images.shape == (2, 3, 24, 24) and 0 <= result.images.min() and result.images.max() <= 1
    assert sum(result.losses[-5:]) / 5 < result.losses[0] * 0.7


# ---- centred crops ---------------------------------------------------------------------------


def test_center_std_zero_puts_every_crop_in_the_middle():
    """With center_std 0 a crop's centre moves only by the jitter."""
    cfg = AugmentConfig(crops=4, crop_scale=(0.25, 0.5), jitter=0.05, center_std=0.0)
    thetas = view_thetas(cfg, ImageStreams.for_batch(0, 64))
    assert thetas[:, :, 2].abs().max() <= 2 * cfg.jitter + 1e-6
    uniform = view_thetas(replace(cfg, center_std=None), ImageStreams.for_batch(0, 64))
    assert uniform[:, :, 2].abs().max() > 0.3


def test_center_std_changes_only_where_crops_land():
    """Sizes, aspect ratios and flips are drawn exactly as in the uniform recipe (same seed)."""
    cfg = AugmentConfig(crops=2, center_std=0.5)
    centred = view_thetas(cfg, ImageStreams.for_batch(3, 16))
    uniform = view_thetas(replace(cfg, center_std=None), ImageStreams.for_batch(3, 16))
    assert torch.equal(centred[:, 0, 0], uniform[:, 0, 0]) and torch.equal(centred[:, 1, 1], uniform[:, 1, 1])
    assert not torch.equal(centred[:, :, 2], uniform[:, :, 2])


def test_center_std_spreads_less_than_uniform():
    """A small center_std keeps crop centres nearer the image centre than uniform placement does."""
    cfg = AugmentConfig(crops=1, crop_scale=(0.25, 0.25), crop_ratio=(1, 1), jitter=0.0, center_std=0.3)
    centred = view_thetas(cfg, ImageStreams.for_batch(0, 2000))[:, :, 2].abs().mean()
    uniform = view_thetas(replace(cfg, center_std=None), ImageStreams.for_batch(0, 2000))[:, :, 2].abs().mean()
    assert centred < 0.5 * uniform


def test_bad_center_std_is_refused():
    with pytest.raises(CaGError, match="center_std"):
        AugmentConfig(center_std=-0.1)


# ---- colour smoothness (chroma_decay) -------------------------------------------------------


def test_chroma_decay_slows_only_the_fine_colour_frequencies():
    """One Adam step on the same gradient: with chroma_decay the brightness channel moves exactly as
    without, the colour channels' coarsest frequency too, and their finest ones far less."""
    from cag_core.parameterization import _frequency_scale

    start = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 0.6 + 0.2
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    moved = {}
    for power in (0.0, 1.0):
        fn = parameterize(start, "fourier", chroma_decay=power)
        assert torch.allclose(fn(), start, atol=1e-5)  # starts from the image, whatever the damping
        opt = torch.optim.Adam(fn.params, lr=0.05)
        (fn() - target).square().sum().backward()
        opt.step()
        with torch.no_grad():
            change = _decorrelated(fn()) - _decorrelated(start)
        moved[power] = torch.fft.rfft2(change, norm="ortho").abs()  # [1, 3, 32, 17]
    plain, damped = moved[0.0], moved[1.0]
    assert torch.allclose(damped[:, 0], plain[:, 0], rtol=0.05, atol=1e-5)  # brightness as before
    assert torch.allclose(damped[:, 1:, 0, 1], plain[:, 1:, 0, 1], rtol=0.05)  # coarsest colour frequency
    fine = (slice(None), slice(1, 3), 16, 16)  # f = 0.5 * sqrt(2) cycles/pixel: damped ~ 1 / 22.6
    assert (damped[fine] < plain[fine] / 5).all()
    assert fn.scale.shape == (3, 32, 17) and parameterize(start, "fourier").scale.shape == (32, 17)
    assert torch.equal(parameterize(start, "fourier").scale, _frequency_scale(32, 32, 1.0, start.device))


def test_bad_chroma_decay_is_refused():
    with pytest.raises(CaGError, match="chroma_decay must be between 0 and 3"):
        OptimizeConfig(chroma_decay=-1.0)
    with pytest.raises(CaGError, match="fourier parameterization only"):
        parameterize(torch.rand(1, 3, 8, 8), "phase", chroma_decay=0.5)


# ---- turned views ----------------------------------------------------------------------------


def test_rotate_turns_the_crop_and_keeps_where_it_lands():
    """rotate turns each crop about its own centre: positions, sizes and flips are those of the upright
    views (same seed), the angles lie within +-rotate, and every angle differs from image to image."""
    cfg = AugmentConfig(crops=2, rotate=20.0)
    upright = view_thetas(replace(cfg, rotate=0.0), ImageStreams.for_batch(5, 32))
    turned = view_thetas(cfg, ImageStreams.for_batch(5, 32))
    assert torch.equal(turned[:, :, 2], upright[:, :, 2])
    # each column of the linear part keeps its length (the crop's size on that axis) and the flip (det sign)
    assert torch.allclose(turned[:, :, :2].norm(dim=1), upright[:, :, :2].norm(dim=1), atol=1e-6)
    assert torch.allclose(torch.linalg.det(turned[:, :, :2]), torch.linalg.det(upright[:, :, :2]), atol=1e-6)
    flip = torch.sign(upright[:, 0, 0])
    angle = torch.rad2deg(torch.atan2(turned[:, 1, 0] * flip, turned[:, 0, 0] * flip))
    assert angle.abs().max() <= 20.0 + 1e-4 and angle.abs().max() > 10.0 and len(set(angle.tolist())) == 64


def test_a_turned_view_of_a_ramp_slopes_along_both_of_its_axes():
    """The view samples the image through the turned matrix: an image that brightens left to right, seen
    through a whole-frame crop turned by a, brightens along the view's x by cos a and its y by sin a."""
    ramp = torch.linspace(0, 1, 64).expand(1, 1, 64, 64).contiguous()
    cfg = AugmentConfig(crops=1, crop_scale=(0.5, 0.5), crop_ratio=(1, 1), jitter=0.0, flip=False,
                        center_std=0.0, rotate=40.0, blur=0.0, noise=0.0)
    streams = ImageStreams.for_batch(1, 1)
    theta = view_thetas(cfg, ImageStreams.for_batch(1, 1))[0]
    view = random_views(ramp, (32, 32), cfg, streams)[0, 0]
    a = torch.atan2(theta[1, 0], theta[0, 0])
    assert a.abs() > 0.05  # the draw turned it visibly
    d_x = (view[:, 1:] - view[:, :-1]).mean() / (1 / 63 * 64 / 32 * 0.5 ** 0.5)
    d_y = (view[1:, :] - view[:-1, :]).mean() / (1 / 63 * 64 / 32 * 0.5 ** 0.5)
    assert torch.allclose(torch.stack([d_x, d_y]), torch.stack([a.cos(), -a.sin()]), atol=0.02)


# ---- blurred views ---------------------------------------------------------------------------


def test_blur_zero_draws_nothing_and_keeps_the_views():
    """Sharp views draw no sigma, so every recipe without blur keeps its stream: the views are those
    of the same config with blur drawn last, before the blur is applied."""
    sharp_cfg = AugmentConfig(blur=0.0)
    assert view_blurs(sharp_cfg, ImageStreams.for_batch(0, 3)) is None
    assert view_blurs(AugmentConfig(), ImageStreams.for_batch(0, 3)) is not None  # the default blurs
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sharp = random_views(image, (24, 24), sharp_cfg, ImageStreams.for_batch(4, 2))
    thetas = view_thetas(sharp_cfg, ImageStreams.for_batch(4, 2))
    assert torch.equal(thetas, view_thetas(AugmentConfig(), ImageStreams.for_batch(4, 2)))  # blur is drawn after
    assert sharp.shape == (4, 3, 24, 24)


def test_each_view_gets_its_own_blur():
    """A view's blur depends on its own sigma only: blurring a batch of views equals blurring each
    alone; sigma 0 leaves a view as it was; a larger sigma smooths more; a flat view stays flat."""
    views = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    sigmas = torch.tensor([0.0, 1.0, 3.0])
    together = blur_views(views, sigmas, 3.0)
    for i in range(3):
        assert torch.allclose(together[i : i + 1], blur_views(views[i : i + 1], sigmas[i : i + 1], 3.0), atol=1e-6)
    assert torch.allclose(together[0], views[0], atol=1e-6)
    roughness = [(v[:, :, 1:] - v[:, :, :-1]).abs().mean() for v in together]
    assert roughness[0] > 2 * roughness[1] > 0 and roughness[1] > 2 * roughness[2]
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(blur_views(flat, torch.tensor([2.0]), 2.0), flat, atol=1e-6)


def test_blur_sigmas_lie_in_range_and_follow_the_views_numbers():
    cfg = AugmentConfig(crops=2, blur=2.5)
    streams = ImageStreams.for_batch(7, 50)
    view_thetas(cfg, streams)
    sigmas = view_blurs(cfg, streams)
    assert sigmas.shape == (100,) and 0 <= sigmas.min() and sigmas.max() <= 2.5 and sigmas.std() > 0.5
    # the matrices come first from each stream, so they are those of the sharp recipe
    assert torch.equal(view_thetas(cfg, ImageStreams.for_batch(7, 50)),
                       view_thetas(replace(cfg, blur=0.0), ImageStreams.for_batch(7, 50)))


@pytest.mark.parametrize("blur", [-0.5, 8.5, float("inf")])
def test_bad_blur_is_refused(blur):
    with pytest.raises(CaGError, match="blur must be between 0 and 8"):
        AugmentConfig(blur=blur)


@pytest.mark.parametrize("rotate", [-1.0, 181.0, float("nan")])
def test_bad_rotate_is_refused(rotate):
    with pytest.raises(CaGError, match="rotate must be between 0 and 180"):
        AugmentConfig(rotate=rotate)


# ---- noisy views (randomized smoothing) -------------------------------------------------------


def test_noise_zero_draws_nothing_and_noise_comes_after_the_blur():
    """Clean views draw nothing, so recipes without noise keep their streams; with noise, the view
    matrices and blur sigmas are those of the clean recipe (the noise is drawn last)."""
    assert view_noises(AugmentConfig(noise=0.0), ImageStreams.for_batch(0, 3)) is None
    cfg = AugmentConfig(crops=2, blur=2.0, noise=0.3)
    streams, clean = ImageStreams.for_batch(7, 40), ImageStreams.for_batch(7, 40)
    assert torch.equal(view_thetas(cfg, streams), view_thetas(replace(cfg, noise=0.0), clean))
    assert torch.equal(view_blurs(cfg, streams), view_blurs(replace(cfg, noise=0.0), clean))
    draws = view_noises(cfg, streams)
    assert draws.shape == (80, 3)
    assert 0 <= draws[:, 0].min() and draws[:, 0].max() <= 0.3 and draws[:, 0].std() > 0.05
    assert 0 <= draws[:, 1:].min() and draws[:, 1:].max() < 1


def test_view_noise_is_the_shared_field_rolled_and_scaled():
    """Each view gets the fixed field rolled by its own offsets, times its own std: std 0 leaves the
    view as it was, the same field comes back for every call, and a batch equals each view alone."""
    field = noise_field(3, 20, 30)
    assert torch.equal(field, noise_field(3, 20, 30))
    assert abs(float(field.mean())) < 0.05 and abs(float(field.std()) - 1) < 0.05
    views = torch.rand(3, 3, 20, 30, generator=torch.Generator().manual_seed(3))
    draws = torch.tensor([[0.0, 0.5, 0.5], [0.2, 0.0, 0.0], [0.5, 0.25, 0.9]])
    noisy = add_view_noise(views, draws)
    assert torch.equal(noisy[0], views[0])
    assert torch.allclose(noisy[1], views[1] + 0.2 * field)
    assert torch.allclose(noisy[2], views[2] + 0.5 * torch.roll(field, shifts=(-5, -27), dims=(1, 2)))
    for i in range(3):
        assert torch.equal(add_view_noise(views[i : i + 1], draws[i : i + 1]), noisy[i : i + 1])


def test_noisy_views_differ_from_step_to_step_and_image_to_image():
    cfg = AugmentConfig(crops=1, noise=0.3, blur=0.0, crop_scale=(1.0, 1.0), jitter=0.0, flip=False)
    image = torch.full((2, 3, 16, 16), 0.5)
    streams = ImageStreams.for_batch(1, 2)
    first, second = random_views(image, (16, 16), cfg, streams), random_views(image, (16, 16), cfg, streams)
    assert not torch.allclose(first, second)  # a new draw each step
    assert not torch.allclose(first[0] - 0.5, first[1] - 0.5)  # and per image
    # image 1 of a batch is image 0 of a batch keyed one further: its own stream, not the batch's
    alone = random_views(image[:1], (16, 16), cfg, ImageStreams([(1, 1)]))
    assert torch.equal(alone[0], first[1])


@pytest.mark.parametrize("noise", [-0.1, 1.5, float("nan")])
def test_bad_noise_is_refused(noise):
    with pytest.raises(CaGError, match="noise must be between 0 and 1"):
        AugmentConfig(noise=noise)


# ---- contrast and focus priors ---------------------------------------------------------------


def test_image_std_fixes_the_contrast_of_a_washed_out_image():
    """A low-contrast (veiled) start comes out of the Fourier parameterization at the asked spread."""
    from cag_core.parameterization import fix_spread

    veiled = 0.5 + 0.1 * (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) - 0.5)
    out = _decorrelated(parameterize(veiled, "fourier", image_std=1.5)())
    spread = (out - out.mean(dim=(-2, -1), keepdim=True)).square().mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(spread, torch.full_like(spread, 1.5), rtol=1e-3)
    # a near-blank image is amplified by MAX_SPREAD_GAIN at most
    blank = torch.full((1, 3, 8, 8), 0.0)
    blank[..., 0, 0] = 1e-3
    assert fix_spread(blank, 1.5).abs().max() <= 4.0 * 1e-3 + 1e-9


def test_image_std_none_is_todays_fourier():
    """Without image_std the Fourier parameterization is unchanged (round trip exact)."""
    images = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(parameterize(images, "fourier", image_std=None)(), images, atol=1e-5)


@pytest.mark.parametrize("kind", ["fourier", "phase"])
def test_focus_keeps_the_centre_and_blurs_the_border(kind):
    """The middle of the image is untouched; the border loses its fine detail."""
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    sharp, focused = parameterize(noise, kind)(), parameterize(noise, kind, focus=0.03)()
    assert torch.allclose(focused[..., 24:40, 24:40], sharp[..., 24:40, 24:40], atol=1e-5)

    def detail(x):
        return (x[..., :, 1:] - x[..., :, :-1]).abs()[..., :6, :].mean()

    assert detail(focused) < 0.5 * detail(sharp)


def test_image_std_is_fourier_only():
    """A fixed contrast is a property of the Fourier image: the other parameterizations refuse it."""
    images = torch.rand(1, 3, 16, 16)
    for kind in ("pixels", "phase"):
        with pytest.raises(CaGError, match="image_std"):
            parameterize(images, kind, image_std=3.6)


def test_focus_and_image_std_reach_the_optimizer():
    """OptimizeConfig's image_std and focus change the run's images; bad values are refused."""
    base = OptimizeConfig(steps=3, augment=AugmentConfig(crops=1))
    start = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    plain = optimize(start, tiny_classifier(), "class 1", config=base).images
    for change in (dict(image_std=1.5), dict(focus=0.05)):
        assert not torch.allclose(optimize(start, tiny_classifier(), "class 1", config=replace(base, **change)).images, plain)
    for bad in (dict(image_std=0.0), dict(focus=1.5)):
        with pytest.raises(CaGError, match=next(iter(bad))):
            replace(base, **bad)


def test_loss_floor_stops_convinced_views_pulling():
    """Views already past the floor give no gradient; the others pull as before."""
    from cag_core.losses import target_loss
    from cag_core.targets import parse_target

    target = parse_target("class 0", [f"class {i}" for i in range(4)], 1)
    logits = torch.tensor([[8.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], requires_grad=True)  # 1 image, 2 views
    target_loss(logits, target, views=2, floor=0.05).backward()
    assert logits.grad[0].abs().max() == 0 and logits.grad[1].abs().max() > 0
    free = logits.detach().clone().requires_grad_(True)
    target_loss(free, target, views=2).backward()
    assert free.grad[0].abs().max() > 0 and torch.allclose(free.grad[1], logits.grad[1])


def test_enough_p_is_validated():
    with pytest.raises(CaGError, match="enough_p"):
        OptimizeConfig(enough_p=1.0)


def test_recipe_search_registers_its_candidates_with_the_quality_benchmark():
    """recipe_search's candidates join benchmarks.quality's variants without shadowing one of them
    (its 'lucid' is quality's own)."""
    from benchmarks import quality, recipe_search

    recipe_search.register()
    assert quality.VARIANTS["lucid"] is recipe_search.CANDIDATES["lucid"]
    assert quality.VARIANTS["lucid"].config == get_recipe("lucid")
    assert set(recipe_search.CANDIDATES) <= set(quality.VARIANTS)


def test_recipe_search_refuses_held_out_classes_unless_a_check_is_rerun(monkeypatch):
    """Held-out classes are refused for tuning, and the refusal names the flag that reruns a
    recorded check (whose draw has joined FORBIDDEN since); with it the run goes ahead."""
    from benchmarks import quality, recipe_search

    held_out = recipe_search.HELDOUT_DRAWS["heldout-noise40"][:2]
    with pytest.raises(SystemExit, match=r"\[21, 33\] are held out: not for tuning.*--rerun-held-out"):
        recipe_search.main(["--classes", "21,33", "--variants", "lucid"])

    class Ran(Exception):
        pass

    def run(names, classes, *args, **kwargs):
        raise Ran(tuple(classes))

    monkeypatch.setattr(quality, "run", run)
    with pytest.raises(Ran) as ran:
        recipe_search.main(["--classes", ",".join(map(str, held_out)), "--variants", "lucid", "--rerun-held-out"])
    assert ran.value.args[0] == held_out
