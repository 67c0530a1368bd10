"""Masks (inpaint / outpaint) and the anchor (img2img) in the engine's one optimize loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cag_core.augment import NO_AUGMENT, AugmentConfig
from cag_core.errors import CaGError
from cag_core.mae import MAEConfig, mae_from_config
from cag_core.optimize import OptimizeConfig, optimize
from cag_core.regions import anchor_loss, feather, mask_for_images
from tiny import tiny_classifier

TINY_MAE = MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
FAST = OptimizeConfig(steps=12, augment=AugmentConfig(crops=2))


def _photo(batch=2, h=24, w=32, seed=0) -> torch.Tensor:
    """8-bit values, as a loaded PNG gives them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, h, w), generator=g).float() / 255


def _box_mask(h=24, w=32) -> torch.Tensor:
    mask = torch.zeros(h, w)
    mask[6:18, 8:24] = 1
    return mask


@pytest.mark.parametrize("param", ["fourier", "pixels"])
@pytest.mark.parametrize("with_mae", [False, True], ids=["no-mae", "mae"])
def test_pixels_outside_the_mask_come_out_exactly_as_they_went_in(param, with_mae):
    """Bit for bit in float, and so equal after the 8-bit round trip; inside, the image changed."""
    photo, mask = _photo(), _box_mask()
    mae = mae_from_config(TINY_MAE, seed=0) if with_mae else None
    result = optimize(photo, tiny_classifier(), "class 3", config=replace(FAST, parameterization=param),
                      mae=mae, mask=mask).images
    keep = (mask == 0).expand_as(photo)
    assert torch.equal(result[keep], photo[keep])
    as_png = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    assert torch.equal(as_png(result)[keep], as_png(photo)[keep])
    assert (result[~keep] - photo[~keep]).abs().max() > 0.05


def test_the_loss_inside_the_mask_falls():
    """The classifier sees the composite; optimizing only the region still lowers the target loss."""
    photo, mask = _photo(seed=1), _box_mask()
    result = optimize(photo, tiny_classifier(), "class 5", config=replace(FAST, steps=25, augment=NO_AUGMENT),
                      mask=mask)
    assert result.losses[-1] < 0.5 * result.losses[0]


def test_a_soft_or_feathered_mask_keeps_the_zero_region_exact():
    photo = _photo(1)
    mask = _box_mask()
    soft = feather(mask_for_images(mask, 1, 24, 32), 3)
    assert torch.equal(soft[0, 0][mask == 0], torch.zeros(int((mask == 0).sum())))
    assert 0 < soft[0, 0, 6, 16] < soft[0, 0, 8, 16] < 1 and soft[0, 0, 12, 16] == 1  # ramps up inside the edge
    result = optimize(photo, tiny_classifier(), "class 2", config=replace(FAST, feather=3), mask=mask).images
    keep = (mask == 0).expand_as(photo)
    assert torch.equal(result[keep], photo[keep])


def test_an_all_ones_mask_is_the_whole_image():
    photo = _photo()
    whole = optimize(photo, tiny_classifier(), "class 1", config=FAST, seed=3).images
    masked = optimize(photo, tiny_classifier(), "class 1", config=FAST, seed=3, mask=torch.ones(24, 32)).images
    assert torch.allclose(whole, masked, atol=1e-6)


def test_a_mask_of_another_size_is_resized_and_per_image_masks_work():
    """A half-size mask (same aspect) follows the image size; [B, H, W] masks apply per image."""
    photo = _photo()
    small = torch.zeros(12, 16)
    small[3:9, 4:12] = 1
    result = optimize(photo, tiny_classifier(), "class 4", config=FAST, mask=small).images
    resized = mask_for_images(small, 2, 24, 32)
    keep = (resized == 0).expand_as(photo)
    assert torch.equal(result[keep], photo[keep])
    per_image = torch.stack([_box_mask(), torch.ones(24, 32)])
    result = optimize(photo, tiny_classifier(), "class 4", config=FAST, mask=per_image).images
    keep0 = (_box_mask() == 0).expand(3, -1, -1)
    assert torch.equal(result[0][keep0], photo[0][keep0]) and not torch.equal(result[1][keep0], photo[1][keep0])


@pytest.mark.parametrize(
    "mask, words",
    [
        (torch.zeros(24, 32), "empty"),
        (torch.ones(24, 24), "aspect ratio"),
        (torch.full((24, 32), float("nan")), "NaN"),
        (torch.ones(3, 24, 32), "batch of 3"),
        (torch.ones(2, 2, 24, 32), "must be"),
    ],
)
def test_bad_masks_are_refused_with_one_sentence(mask, words):
    with pytest.raises(CaGError, match=words):
        optimize(_photo(), tiny_classifier(), "class 1", config=replace(FAST, steps=1), mask=mask)


def test_a_feather_that_leaves_nothing_is_refused():
    thin = torch.zeros(24, 32)
    thin[10, 4:28] = 1
    with pytest.raises(CaGError, match="lower feather"):
        optimize(_photo(), tiny_classifier(), "class 1", config=replace(FAST, steps=1, feather=4), mask=thin)


def test_anchor_weight_pulls_toward_the_start_monotonically():
    """The larger the weight, the closer the result's thumbnail stays to the start's; 0 is off.
    (The tiny random classifier's cross-entropy is in the tens, hence the large weights.)"""
    photo = _photo(seed=2)
    distances = []
    for weight in (0.0, 100.0, 1000.0, 10000.0):
        config = replace(FAST, steps=20, anchor_weight=weight, parameterization="pixels")
        result = optimize(photo, tiny_classifier(), "class 7", config=config, seed=1).images
        distances.append(float(anchor_loss(result, photo).mean()))
    assert all(a > b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] < 0.3 * distances[0]


def test_anchor_is_per_image_and_the_batch_does_not_matter():
    """With the anchor and a mask, image 1 of a batch is that image run alone (its own stream)."""
    from cag_core.streams import ImageStreams, stage_purpose

    photo, mask = _photo(seed=3), _box_mask()
    config = replace(FAST, anchor_weight=10.0)
    whole = optimize(photo, tiny_classifier(), "class 2", config=config, seed=4, mask=mask).images
    streams = ImageStreams([(4, 1, *stage_purpose(24, 32))])
    alone = optimize(photo[1:], tiny_classifier(), "class 2", config=config, streams=streams, mask=mask).images
    assert torch.equal(whole[1:], alone)


def test_png_round_trip_of_a_real_photo(tmp_path):
    """A photo saved as PNG, loaded, inpainted and saved again: the unmasked pixels' bytes match."""
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.chelsea()).resize((48, 32)))
    Image.fromarray(photo).save(tmp_path / "in.png")
    loaded = torch.from_numpy(np.array(Image.open(tmp_path / "in.png"))).permute(2, 0, 1)[None].float() / 255
    mask = torch.zeros(32, 48)
    mask[8:24, 12:36] = 1
    out = optimize(loaded, tiny_classifier(), "class 0", config=FAST, mask=mask).images
    Image.fromarray((out[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(tmp_path / "out.png")
    back = np.asarray(Image.open(tmp_path / "out.png"))
    keep = mask.numpy() == 0
    assert np.array_equal(back[keep], photo[keep]) and not np.array_equal(back[~keep], photo[~keep])


# -- the same through generate() and the command line ------------------------------------------


def test_generate_from_a_photo_keeps_its_pixels_outside_the_mask():
    """Progressive stages from a picture: the last stage is the picture's size, and its unmasked
    pixels are the picture's own (not an upsampled copy of an earlier stage)."""
    from cag_core.progressive import ProgressiveConfig, generate, stage_sides

    photo, mask = _photo(batch=1, h=36, w=48), torch.zeros(36, 48)
    mask[8:28, 12:36] = 1
    config = ProgressiveConfig(sizes=(16, 32, 64), steps=(3,))
    assert stage_sides((36, 48), config.sizes) == [(9, 12), (18, 24), (36, 48)]
    out = generate(tiny_classifier(), "class 2", batch=2, config=config, init=photo, mask=mask).images
    keep = (mask == 0).expand(2, 3, -1, -1)
    assert out.shape == (2, 3, 36, 48) and torch.equal(out[keep], photo.expand(2, -1, -1, -1)[keep])
    assert not torch.equal(out[0], out[1])  # each image its own stream
    with pytest.raises(CaGError, match="needs a start picture"):
        generate(tiny_classifier(), "class 2", config=config, mask=mask)


def test_cli_init_mask_anchor(tmp_path, capsys):
    """generate --init PHOTO --mask MASK.png: white = change; an RGBA init's alpha is the mask by
    default (transparent = change, as Load Image); --anchor runs img2img."""
    from PIL import Image

    from cag_core.cli import main
    from tiny import save_tiny_classifier

    weights = save_tiny_classifier(tmp_path / "tiny.safetensors")
    rgb = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    white = np.zeros((24, 32), np.uint8)
    white[4:16, 8:24] = 255
    Image.fromarray(white).save(tmp_path / "mask.png")
    rgba = np.dstack([rgb, 255 - white])  # transparent where the mask is white
    Image.fromarray(rgba).save(tmp_path / "holed.png")
    common = ["generate", "--classifier", str(weights), "--class", "class 3", "--sizes", "16", "32", "--steps", "2",
              "--quiet"]
    for init, extra in (("photo.png", ["--mask", str(tmp_path / "mask.png")]), ("holed.png", [])):
        out = tmp_path / f"out_{init}"
        assert main([*common, "--init", str(tmp_path / init), *extra, "--out", str(out)]) == 0
        result = np.asarray(Image.open(out))
        keep = white == 0
        assert result.shape == (24, 32, 3) and np.array_equal(result[keep], rgb[keep])
        assert not np.array_equal(result[~keep], rgb[~keep])
    assert main([*common, "--init", str(tmp_path / "photo.png"), "--anchor", "50", "--out", str(tmp_path / "a.png")]) == 0
    assert main([*common, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "b.png")]) == 2
    assert "--mask needs --init" in capsys.readouterr().err


def test_fill_from_surroundings_extends_the_kept_pixels():
    """The masked region starts as a smooth extension of what is around it: a gray pad next to a
    blue picture becomes blue-ish, the kept pixels stay exact, and with fill_masked the result of
    a stage keeps them exact too."""
    from cag_core.regions import fill_from_surroundings

    image = torch.full((1, 3, 16, 24), 0.5)
    image[..., 4:20] = torch.tensor([0.1, 0.2, 0.8]).view(1, 3, 1, 1)
    mask = torch.zeros(1, 1, 16, 24)
    mask[..., :4] = 1
    mask[..., 20:] = 1
    filled = fill_from_surroundings(image, mask)
    assert torch.equal(filled[..., 4:20], image[..., 4:20])
    assert torch.allclose(filled[..., :4], torch.tensor([0.1, 0.2, 0.8]).view(1, 3, 1, 1).expand(1, 3, 16, 4), atol=1e-6)
    out = optimize(image, tiny_classifier(), "class 1", config=replace(FAST, fill_masked=True), mask=mask[0]).images
    assert torch.equal(out[..., 4:20], image[..., 4:20])
    plain = optimize(image, tiny_classifier(), "class 1", config=FAST, mask=mask[0]).images
    assert (out[..., :4] - filled[..., :4]).abs().mean() < (plain[..., :4] - filled[..., :4]).abs().mean()
