"""Per-image random streams: an image depends on its key and the recipe, not on its batch."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cag_core.augment import AugmentConfig
from cag_core.mae import MAEConfig, load_mae, mae_from_config
from cag_core.optimize import OptimizeConfig, optimize
from cag_core.progressive import ProgressiveConfig, generate, init_noise, noise_streams
from cag_core.streams import ImageStreams, stage_purpose, stream_seed
from tiny import tiny_classifier

ROOT = Path(__file__).resolve().parents[1]
TINY_MAE = MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
TINY = ProgressiveConfig(sizes=(16, 24), steps=(3,), stage=OptimizeConfig(augment=AugmentConfig(crops=2)))


def test_stream_seed_is_stable_across_processes_and_hash_seeds():
    """The seed of a key is the same in another interpreter with another PYTHONHASHSEED (it is not
    Python's salted hash()), and neighbouring keys get unrelated seeds."""
    code = "from cag_core.streams import stream_seed; print(stream_seed((7, 207, 3, 'noise')))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == stream_seed((7, 207, 3, "noise"))
    seeds = {stream_seed((7, i)) for i in range(100)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(TypeError, match="tuple of ints and strings"):
        stream_seed((1.5,))


def test_streams_draw_per_image():
    """Row i of a draw depends only on key i: a sub-batch draws the same rows."""
    keys = [(3, i) for i in range(4)]
    full = ImageStreams(keys).rand(5, 2)
    part = ImageStreams(keys[2:3]).rand(5, 2)
    assert torch.equal(full[2:3], part) and not torch.equal(full[0], full[1])


def test_noise_of_a_batch_is_its_images_alone():
    """CaG Init Noise's rule: image i of a batch of any size is the same."""
    big = init_noise(noise_streams(5, 6), 8, 12, "gray")
    assert torch.equal(big[:2], init_noise(noise_streams(5, 2), 8, 12, "gray"))


@pytest.mark.parametrize("bn_weight,image_std", [(0.0, None), (0.1, None), (0.1, 3.6)],
                         ids=["no-priors", "bn-tv", "bn-tv-every2-std"])
@pytest.mark.parametrize("crops", [2, 1], ids=["2-crops", "1-crop"])
@pytest.mark.parametrize("with_mae", [True, False], ids=["mae", "no-mae"])
def test_an_image_is_the_same_in_any_batch(crops, with_mae, bn_weight, image_std):
    """Generating keys [a, b, c, d] as one batch, as [a, b, c] + [d], or one by one gives the same
    images bit for bit on the CPU (one crop per image runs the lone-view path), also with the
    BN-statistics prior, which is measured per image, every other step, and a fixed contrast (the
    default recipe's), which is measured per image."""
    classifier = tiny_classifier()
    mae = mae_from_config(TINY_MAE, seed=0) if with_mae else None
    config = replace(TINY, stage=replace(TINY.stage, augment=AugmentConfig(crops=crops), bn_weight=bn_weight,
                                         tv_weight=bn_weight, image_std=image_std,
                                         bn_every=2 if image_std else 1))
    keys = [(11, c, k) for c, k in ((1, 0), (1, 1), (4, 0), (7, 5))]
    targets = ["class 1", "class 1", "class 4", "class 7"]

    def run(part):
        return generate(classifier, "\n".join(targets[i] for i in part), batch=len(part), config=config,
                        mae=mae, keys=[keys[i] for i in part])

    whole = run([0, 1, 2, 3])
    split = torch.cat([run([0, 1, 2]).images, run([3]).images])
    alone = torch.cat([run([i]).images for i in range(4)])
    assert torch.equal(whole.images, split) and torch.equal(whole.images, alone)
    assert whole.image_losses == pytest.approx([run([i]).image_losses[0] for i in range(4)], abs=0)


def test_the_embedded_classifier_with_the_toy_mae_is_batch_independent():
    """The same with the real Lite0 kernels (folded, channels_last, oneDNN, the BN prior on the
    folded convolutions) and the shipped toy MAE: a batch of 4 and a batch of 3 plus 1 give the
    same images bit for bit."""
    from cag_core.timm_classifier import embedded_classifier

    classifier = embedded_classifier("efficientnet-lite0")
    mae = load_mae(ROOT / "models" / "mae" / "cag_tiny_mae_skimage.safetensors")
    config = ProgressiveConfig(sizes=(64,), steps=(2,), stage=replace(ProgressiveConfig().stage, bn_weight=0.001))
    keys = [(0, c, 0) for c in (1, 130, 207, 980)]
    target = "1\n130\n207\n980"
    whole = generate(classifier, target, batch=4, config=config, mae=mae, keys=keys).images
    three = generate(classifier, "1\n130\n207", batch=3, config=config, mae=mae, keys=keys[:3]).images
    one = generate(classifier, "980", batch=1, config=config, mae=mae, keys=keys[3:]).images
    assert torch.equal(whole, torch.cat([three, one]))


def test_optimize_seed_means_the_node_streams():
    """optimize(seed=s) draws image i's masks and views from (s, i, "optimize", H, W), so a stage of
    images [x0, x1, x2] gives x1's result also when x1 is run with that stream alone."""
    classifier, mae = tiny_classifier(), mae_from_config(TINY_MAE, seed=0)
    images = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    config = OptimizeConfig(steps=3)
    whole = optimize(images, classifier, "class 2", config=config, mae=mae, seed=9).images
    streams = ImageStreams([(9, 1, *stage_purpose(24, 24))])
    alone = optimize(images[1:2], classifier, "class 2", config=config, mae=mae, streams=streams).images
    assert torch.equal(whole[1:2], alone)
    with pytest.raises(Exception, match="one per image"):
        optimize(images, classifier, "class 2", config=config, streams=streams)


def test_generate_equals_the_node_chain():
    """generate(seed=s) is CaG Init Noise(seed s) -> CaG Optimize(seed s) -> upsample -> ...: the
    streams a workflow's nodes draw with that seed, so a workflow and the command line agree."""
    from cag_core.progressive import upsample

    classifier = tiny_classifier()
    result = generate(classifier, "class 3", batch=2, seed=4, config=TINY).images
    images = init_noise(noise_streams(4, 2), 16, 16, TINY.noise)
    for size, stage in zip(TINY.sizes, TINY.stage_configs()):
        images = optimize(upsample(images, size, size), classifier, "class 3", config=stage, seed=4).images
    assert torch.equal(result, images)
