"""Progressive generation: noise, upsampling, the staged run, and the command line."""

from dataclasses import replace

import pytest
import torch
from PIL import Image

from cag_core.augment import AugmentConfig
from cag_core.cli import main
from cag_core.errors import CaGError
from cag_core.mae import MAEConfig, mae_from_config, save_mae
from cag_core.optimize import OptimizeConfig
from cag_core.progressive import ProgressiveConfig, generate, init_noise, noise_streams, stage_sizes, upsample
from tiny import save_tiny_classifier, tiny_classifier

TINY = ProgressiveConfig(sizes=(16, 32), steps=(4,), stage=OptimizeConfig(augment=AugmentConfig(crops=2), view_size=32))


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "gray"])
def test_noise_is_seeded_and_in_range(kind):
    """Each noise kind is in [0, 1] and fixed by its generator's seed."""
    a = init_noise(noise_streams(1, 2), 8, 12, kind)
    b = init_noise(noise_streams(1, 2), 8, 12, kind)
    assert a.shape == (2, 3, 8, 12) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1


def test_bad_noise_and_sizes_are_refused():
    """Unknown noise kinds and unusable sizes name the allowed values."""
    with pytest.raises(CaGError, match="uniform"):
        init_noise(noise_streams(0, 1), 8, 8, "perlin")
    with pytest.raises(CaGError, match="between 1 and"):
        init_noise(noise_streams(0, 1), 0, 8)
    with pytest.raises(CaGError, match="between 1 and"):
        upsample(torch.rand(1, 3, 8, 8), 100000, 8)
    with pytest.raises(CaGError, match="bicubic"):
        upsample(torch.rand(1, 3, 8, 8), 16, 16, "lanczos")


def test_upsample_is_clamped():
    """Bicubic overshoot is clamped back into [0, 1]."""
    checker = (torch.arange(64).view(8, 8) % 2).float().expand(1, 3, 8, 8)
    up = upsample(checker, 32, 32)
    assert up.shape == (1, 3, 32, 32) and up.min() >= 0 and up.max() <= 1


def test_generate_runs_all_stages_reproducibly():
    """64->128-style staging returns the last size, one loss list per stage, and repeats bit for bit."""
    classifier = tiny_classifier()
    a = generate(classifier, "class 2\nclass 5", batch=2, seed=3, config=TINY)
    b = generate(classifier, "class 2\nclass 5", batch=2, seed=3, config=TINY)
    assert a.images.shape == (2, 3, 32, 32) and [len(s) for s in a.stage_losses] == [4, 4]
    assert torch.equal(a.images, b.images)
    assert a.labels == ("class 2", "class 5")


def test_generate_callback_knows_the_stage():
    """The stage callback reports stage, stage count, step and total steps."""
    calls = []
    generate(tiny_classifier(), "class 1", config=TINY, callback=lambda *a: calls.append(a[:4]))
    assert calls[0] == (0, 2, 1, 4) and calls[-1] == (1, 2, 4, 4)


def test_stage_sizes_double_up_to_the_final_size():
    """stage_sizes(256, 3) is (64, 128, 256)."""
    assert stage_sizes(256, 3) == (64, 128, 256)
    assert stage_sizes(224, 2) == (112, 224)


def test_steps_must_match_the_stages():
    """One steps value is repeated; a wrong count is refused."""
    assert [c.steps for c in replace(TINY, steps=(3, 5)).stage_configs()] == [3, 5]
    with pytest.raises(CaGError, match="steps"):
        replace(TINY, steps=(1, 2, 3)).stage_configs()


def test_view_noise_per_stage():
    """view_noise gives each stage its own view noise (one value is repeated; () keeps the stage
    config's); a wrong count or an out-of-range value is refused with the allowed values."""
    def noises(config):
        return [c.augment.noise for c in config.stage_configs()]

    assert noises(TINY) == [TINY.stage.augment.noise] * 2
    assert noises(replace(TINY, view_noise=(0.2, 0))) == [0.2, 0.0]
    assert noises(replace(TINY, view_noise=(0.1,))) == [0.1, 0.1]
    with pytest.raises(CaGError, match="one view noise value or one per stage: 2 stages, 3 values"):
        replace(TINY, view_noise=(0.1, 0.2, 0.3)).stage_configs()
    with pytest.raises(CaGError, match="between 0 and 1"):
        replace(TINY, view_noise=(0.1, 1.5)).stage_configs()


def test_clean_last_stage_changes_only_the_last_stage():
    """With view_noise (0.3, 0) the first stage draws and makes exactly what the recipe with noise in
    every stage makes, and the last stage, now with clean views, makes another image."""
    classifier = tiny_classifier()
    noisy = replace(TINY, stage=replace(TINY.stage, augment=replace(TINY.stage.augment, noise=0.3)))

    def run(config):
        first = []

        def callback(stage, stages, step, steps, images, loss):
            if stage == 0:
                first.append(images.clone())

        images = generate(classifier, "class 2", seed=1, config=config, callback=callback).images
        return first[-1], images

    first_all, last_all = run(noisy)
    first_clean, last_clean = run(replace(noisy, view_noise=(0.3, 0.0)))
    assert torch.equal(first_all, first_clean)
    assert not torch.allclose(last_all, last_clean)


def test_cli_generates_pngs_from_local_weights(tmp_path, capsys):
    """`python -m cag_core generate` runs end to end on tiny local weights and an MAE and writes PNGs."""
    weights = save_tiny_classifier(tmp_path / "tiny.safetensors")
    mae = mae_from_config(MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2), seed=0)
    save_mae(mae, tmp_path / "mae.safetensors")
    out = tmp_path / "out" / "img.png"
    code = main(["generate", "--classifier", str(weights), "--mae", str(tmp_path / "mae.safetensors"),
                 "--class", "class 1", "--class", "3", "--sizes", "16", "24", "--steps", "3", "--crops", "1",
                 "--out", str(out), "--grid", str(tmp_path / "grid.png"), "--quiet"])
    assert code == 0
    for path in (tmp_path / "out" / "img_0.png", tmp_path / "out" / "img_1.png"):
        assert Image.open(path).size == (24, 24)
    assert (tmp_path / "grid.png").exists()
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    """A bad class name exits with code 2 and one readable sentence, not a traceback."""
    weights = save_tiny_classifier(tmp_path / "tiny.safetensors")
    code = main(["generate", "--classifier", str(weights), "--class", "class 99", "--quiet", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


def test_out_of_memory_is_reported_with_a_smaller_batch(monkeypatch):
    """A device OOM during a stage becomes one sentence naming the batch size to try."""
    from cag_core import progressive
    from cag_core.errors import OutOfMemory

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(progressive, "optimize", exhausted)
    with pytest.raises(OutOfMemory, match="batch 4 at 16x16: try batch 2"):
        generate(tiny_classifier(), "class 1", batch=4, config=TINY)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], 0.4),  # the default recipe: centred crops
        (["--crop-center-std", "0"], None),  # 0 = anywhere (uniform)
        (["--crop-center-std", "0.7"], 0.7),
        (["--init", "photo.png"], None),  # from a picture the region to change can be anywhere
        (["--init", "photo.png", "--crop-center-std", "0.3"], 0.3),
    ],
)
def test_cli_crop_center_std(argv, expected):
    from cag_core.cli import build_parser, config_from_args

    args = build_parser().parse_args(["generate", "--class", "1", *argv])
    assert config_from_args(args).stage.augment.center_std == expected


def test_cli_lucid_tight_from_flags():
    """--crop-center-std 0.25 --crop-max 0.6 --bn 0 --tv 0 is the recipe lucid_tight (measured without
    the priors and on three sharp stages); --bn 0 --tv 0 alone is lucid_centered, the default before them."""
    from cag_core.cli import build_parser, config_from_args
    from cag_core.recipes import get_recipe

    sharp = ["--sizes", "64", "128", "256", "--view-blur", "0", "--view-noise", "0", "--decay-power", "1",
             "--bn-every", "1", "--image-std", "0"]
    off = ["--bn", "0", "--tv", "0", "--steps", "100", "100", "100", *sharp]
    args = build_parser().parse_args(["generate", "--class", "1", "--crop-center-std", "0.25", "--crop-max", "0.6", *off])
    assert config_from_args(args) == get_recipe("lucid_tight")
    assert config_from_args(build_parser().parse_args(["generate", "--class", "1", *off])) == get_recipe("lucid_centered")
    args = build_parser().parse_args(["generate", "--class", "1", "--steps", "50", "100", "100", *sharp])
    assert config_from_args(args) == get_recipe("lucid_centered_bn50")


def test_cli_default_is_lucid_steep_std_and_the_defaults_before_are_flags_away():
    """No flags: the default recipe lucid_steep_std (32 -> 64 -> 128 -> 256, 50/50/100/100 steps, view
    blur 4, view noise 0.3, spectrum 1/f^1.5, the BN prior every other step, contrast fixed to 3.6);
    --bn-every 1 --image-std 0 is lucid_steep, the default before; with that --decay-power 1 is
    lucid_smoothed, the one before; with
    --view-noise 0 lucid_coarse, the one before that; --sizes 64 128 256 --steps 100 100 100
    --view-blur 0 --view-noise 0 is lucid_centered_bn; --init alone gives sharp, clean views and
    Lucid's spectrum (the photo recipes were measured so), each flag overrides it; other
    parameterizations keep their own fall-off."""
    from cag_core.cli import build_parser, config_from_args
    from cag_core.recipes import get_recipe

    def config(*argv):
        return config_from_args(build_parser().parse_args(["generate", "--class", "1", *argv]))

    assert config() == get_recipe("lucid_steep_std") == ProgressiveConfig()
    explicit = ["--sizes", "32", "64", "128", "256", "--steps", "50", "50", "100", "100", "--view-blur", "4"]
    assert config(*explicit, "--bn-every", "2", "--image-std", "3.6") == get_recipe("lucid_steep_std")
    before = ["--bn-every", "1", "--image-std", "0"]  # lucid_steep and every recipe before it
    assert config(*explicit, *before, "--view-noise", "0.3", "--decay-power", "1.5") == get_recipe("lucid_steep")
    assert config(*explicit, *before, "--view-noise", "0.3", "--decay-power", "1") == get_recipe("lucid_smoothed")
    lucid = [*before, "--decay-power", "1"]
    assert config(*explicit, *lucid, "--view-noise", "0") == config(*lucid, "--view-noise", "0") == get_recipe("lucid_coarse")
    assert config("--sizes", "64", "128", "256", "--steps", "100", "100", "100", "--view-blur", "0",
                  "--view-noise", "0", *lucid) == get_recipe("lucid_centered_bn")
    assert config("--init", "photo.png").stage.augment.blur == 0
    assert config("--init", "photo.png").stage.augment.noise == 0
    assert config("--init", "photo.png").stage.decay_power == 1.0
    assert config("--init", "photo.png").stage.image_std is None and config("--init", "photo.png").stage.bn_every == 1
    assert config("--init", "photo.png", "--image-std", "2", "--bn-every", "3").stage.image_std == 2
    assert config("--param", "pixels").stage.image_std is None and config("--param", "phase").stage.image_std is None
    assert config("--init", "photo.png", "--decay-power", "1.5").stage.decay_power == 1.5
    assert config("--param", "phase").stage.decay_power is None  # phase: the photos' slope, as before
    assert config("--param", "phase", "--decay-power", "1.6").stage.decay_power == 1.6
    assert config("--init", "photo.png", "--view-noise", "0.2").stage.augment.noise == 0.2
    assert config("--init", "photo.png", "--view-blur", "2").stage.augment.blur == 2
    sharp_finish = config("--view-noise", "0.3", "0.3", "0.3", "0", *lucid)
    assert sharp_finish == get_recipe("lucid_sharp_finish")
    assert [c.augment.noise for c in sharp_finish.stage_configs()] == [0.3, 0.3, 0.3, 0.0]
    assert [c.augment.noise for c in config("--init", "photo.png").stage_configs()] == [0.0] * 4
