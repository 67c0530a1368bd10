"""The ComfyUI nodes, called the way ComfyUI calls them (inside torch.inference_mode()), on tiny models.

ComfyUI itself is stubbed (see conftest): folder_paths over a temporary models folder, a
ProgressBar that records updates and can raise the interrupt, and model_management on the CPU.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from conftest import (
    PACK_NAME,
    REPO_ROOT,
    TINY_CLASSIFIER,
    TINY_CLASSIFIER_10,
    TINY_CLASSIFIER_NO_ARCH,
    TINY_CLIP,
    TINY_CLIP_NAME,
    InterruptProcessingException,
    comfy_image,
    load_pack,
    run_node,
)
from tiny import TINY_ARCH

ALL_NODES = {
    "CaGLoadClassifier", "CaGLoadMAE", "CaGTextClassifier", "CaGCombineClassifiers", "CaGClassPicker",
    "CaGInitNoise", "CaGOptimize", "CaGUpsample", "CaGClassify",
}
OPTIMIZE_DEFAULTS = dict(
    target_class="207: golden retriever", steps=3, lr=0.05, crops=1, parameterization="fourier", mask_ratio=0.75,
    diversity_weight=0.0, bn_weight=0.0, tv_weight=0.0, seed=0,
)


def CaGError(comfy):
    """The pack's own CaGError class (the pack is imported as a package, like ComfyUI does)."""
    return comfy.cag_core.errors.CaGError


def load_classifier(comfy, source=TINY_CLASSIFIER, architecture=""):
    return run_node(comfy.node("CaGLoadClassifier"), source=source, architecture=architecture, device="auto")[0]


def load_mae(comfy, name="tiny_mae.safetensors", size="auto"):
    return run_node(comfy.node("CaGLoadMAE"), mae_file=name, size=size, device="auto")[0]


def optimize(comfy, image, classifier, **overrides):
    inputs = {**OPTIMIZE_DEFAULTS, **overrides}
    return run_node(comfy.node("CaGOptimize"), image=image, classifier=classifier, **inputs)


# --------------------------------------------------------------------------------------------
# Entry point and conventions


def test_entry_point_exports_all_nodes(comfy):
    """__init__.py exports the mappings and WEB_DIRECTORY; every node has a display name."""
    assert set(comfy.pack.NODE_CLASS_MAPPINGS) == ALL_NODES
    assert set(comfy.pack.NODE_DISPLAY_NAME_MAPPINGS) == ALL_NODES
    assert comfy.pack.WEB_DIRECTORY == "./web"
    assert list((REPO_ROOT / "web").glob("*.js"))


@pytest.mark.parametrize("key", sorted(ALL_NODES))
def test_node_follows_the_v1_conventions(comfy, key):
    """Category CaG, a description, named outputs, a FUNCTION that exists, a tooltip on every input."""
    cls = comfy.pack.NODE_CLASS_MAPPINGS[key]
    assert cls.CATEGORY == "CaG" and cls.DESCRIPTION
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert callable(getattr(cls, cls.FUNCTION))
    for section in ("required", "optional"):
        for name, entry in cls.INPUT_TYPES().get(section, {}).items():
            assert len(entry) > 1 and entry[1].get("tooltip"), f"{key}.{name} has no tooltip"


def test_missing_dependency_disables_the_pack_with_one_message(comfy, caplog):
    """Without timm the pack logs what to install and exports no nodes instead of breaking startup."""
    name = PACK_NAME + "_without_timm"
    before = set(sys.modules)
    try:
        with patch.dict(sys.modules, {"timm": None}), caplog.at_level(logging.ERROR):
            pack = load_pack(name)
    finally:
        for module in set(sys.modules) - before:
            del sys.modules[module]
    assert pack.NODE_CLASS_MAPPINGS == {} and pack.WEB_DIRECTORY == "./web"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "pip install timm" in errors[0]


# --------------------------------------------------------------------------------------------
# Model folders


def test_folders_are_registered_with_weight_extensions(comfy):
    """The pack's keys list weight files; core's "classifiers" key keeps its own filter."""
    registry = comfy.folder_paths.folder_names_and_paths
    assert registry["classifiers"][1] == {""}
    for key, sub in (("cag_classifiers", "classifiers"), ("cag_mae", "mae"), ("cag_clip", "cag_clip")):
        assert registry[key][0][0] == str(comfy.models_dir / sub)
        assert registry[key][1] == {".safetensors", ".pth", ".pt", ".bin"}
    assert TINY_CLASSIFIER in comfy.folder_paths.get_filename_list("cag_classifiers")


def test_models_bundled_with_the_pack_are_listed(comfy):
    """The pack's own models/mae folder comes after ComfyUI's, so its toy MAE is selectable."""
    bundled = REPO_ROOT / "models" / "mae"
    if not bundled.is_dir():
        pytest.skip("no bundled models in this checkout")
    assert comfy.folder_paths.folder_names_and_paths["cag_mae"][0] == [str(comfy.models_dir / "mae"), str(bundled)]
    names = {p.name for p in bundled.glob("*.safetensors")}
    assert names <= set(comfy.folder_paths.get_filename_list("cag_mae"))


def test_registration_keeps_paths_from_extra_model_paths(comfy, tmp_path):
    """Paths that extra_model_paths.yaml registered (under ours or core's key) are kept and searched."""
    fp = comfy.folder_paths
    fp.reset()
    fp.add_model_folder_path("cag_mae", str(tmp_path / "yaml_mae"))
    fp.add_model_folder_path("classifiers", str(tmp_path / "yaml_classifiers"))
    core_before = (list(fp.folder_names_and_paths["classifiers"][0]), set(fp.folder_names_and_paths["classifiers"][1]))
    comfy.nodes.register_model_folders()
    comfy.nodes.register_model_folders()  # idempotent
    registry = fp.folder_names_and_paths
    assert registry["cag_mae"][0][:2] == [str(tmp_path / "yaml_mae"), str(comfy.models_dir / "mae")]
    assert str(tmp_path / "yaml_classifiers") in registry["cag_classifiers"][0]
    assert (list(registry["classifiers"][0]), registry["classifiers"][1]) == core_before


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("/etc/passwd.safetensors", "absolute path"),
        ("../mae/tiny_mae.safetensors", "'..'"),
        ("sub/../../x.safetensors", "'..'"),
        ("notes.txt", "extension"),
        ("missing.safetensors", "not found"),
    ],
)
def test_model_file_names_are_confined(comfy, name, words):
    """Absolute paths, '..', other extensions and unknown names are refused with the reason."""
    with pytest.raises(CaGError(comfy), match=words):
        comfy.nodes.model_folders.resolve_model_file("cag_classifiers", name)


def test_symlink_leaving_the_folder_is_refused(comfy, tmp_path):
    """A link inside models/classifiers whose real file is elsewhere is refused; a file is found."""
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    link = comfy.models_dir / "classifiers" / "escape.safetensors"
    link.symlink_to(outside)
    try:
        with pytest.raises(CaGError(comfy), match="outside the cag_classifiers folders"):
            comfy.nodes.model_folders.resolve_model_file("cag_classifiers", "escape.safetensors")
        resolved = comfy.nodes.model_folders.resolve_model_file("cag_classifiers", TINY_CLASSIFIER)
        assert resolved == os.path.realpath(comfy.models_dir / "classifiers" / TINY_CLASSIFIER)
    finally:
        link.unlink()


def test_symlink_into_another_registered_folder_is_allowed(comfy, tmp_path):
    """Linking to a file in a folder registered under the same key (extra_model_paths) is fine."""
    extra = tmp_path / "more_classifiers"
    extra.mkdir()
    target = extra / "linked.safetensors"
    target.write_bytes(b"x")
    comfy.folder_paths.folder_names_and_paths["cag_classifiers"][0].append(str(extra))
    link = comfy.models_dir / "classifiers" / "linked.safetensors"
    link.symlink_to(target)
    try:
        assert comfy.nodes.model_folders.resolve_model_file("cag_classifiers", "linked.safetensors") == str(target)
    finally:
        link.unlink()


# --------------------------------------------------------------------------------------------
# Loaders


def test_classifier_file_loads_and_is_reused(comfy, monkeypatch):
    """Loading the same file twice returns the same object and reads the file once."""
    module = comfy.nodes.classifier_nodes
    calls = []
    real = module.classifier_from_file
    monkeypatch.setattr(module, "classifier_from_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = load_classifier(comfy)
    second = load_classifier(comfy)
    assert first is second and len(calls) == 1
    assert first.num_classes == 1000 and first.class_names[207] == "golden retriever"
    assert all(not p.is_inference() for p in first.parameters())  # loaded outside inference mode


def test_replaced_file_is_reloaded(comfy):
    """The cache key includes mtime and size: a rewritten file is loaded again."""
    first = load_classifier(comfy)
    path = comfy.models_dir / "classifiers" / TINY_CLASSIFIER
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert load_classifier(comfy) is not first
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_file_without_architecture_needs_the_architecture_field(comfy):
    """A file without metadata fails with the fix; with architecture it loads."""
    with pytest.raises(CaGError(comfy), match="does not say which architecture"):
        load_classifier(comfy, TINY_CLASSIFIER_NO_ARCH)
    assert load_classifier(comfy, TINY_CLASSIFIER_NO_ARCH, architecture=TINY_ARCH).num_classes == 1000


def test_embedded_efficientnet_lite0_loads(comfy):
    """The default source works offline from its pip package, with ImageNet class names."""
    classifier = load_classifier(comfy, "efficientnet-lite0")
    assert classifier.name == "efficientnet-lite0" and classifier.num_classes == 1000


def test_timm_source_offline_gives_a_download_hint(comfy):
    """Without network, the timm source explains where to put the weights by hand."""
    with pytest.raises(CaGError(comfy), match="models/classifiers"):
        load_classifier(comfy, comfy.nodes.classifier_nodes.TIMM_SOURCE, architecture=TINY_ARCH)


@pytest.mark.parametrize(
    ("source", "architecture", "words"),
    [
        ("timm: download by name", "", "Write a timm model name"),
        ("timm: download by name", "resnet5O", "Unknown timm architecture"),
        ("nope.safetensors", "", "not available"),
    ],
)
def test_load_classifier_validation(comfy, source, architecture, words):
    """VALIDATE_INPUTS catches a missing or unknown architecture and an unknown source early."""
    result = comfy.pack.NODE_CLASS_MAPPINGS["CaGLoadClassifier"].VALIDATE_INPUTS(source=source, architecture=architecture)
    assert isinstance(result, str) and words in result


def test_load_classifier_validation_passes_good_and_linked_inputs(comfy):
    cls = comfy.pack.NODE_CLASS_MAPPINGS["CaGLoadClassifier"]
    assert cls.VALIDATE_INPUTS(source="efficientnet-lite0", architecture="") is True
    assert cls.VALIDATE_INPUTS(source=TINY_CLASSIFIER, architecture=TINY_ARCH) is True
    assert cls.VALIDATE_INPUTS(source=cls.source_choices()[-1], architecture=None) is True  # linked name


def test_mae_loads_once_and_size_override_is_checked(comfy):
    """The MAE is built outside inference mode and reused; a wrong size override is a clear error."""
    mae = load_mae(comfy)
    assert load_mae(comfy) is mae
    assert all(not p.is_inference() for p in mae.parameters())
    with pytest.raises(CaGError(comfy), match="does not fit MAE config 'base'"):
        load_mae(comfy, size="base")


def test_text_classifier_builds_from_a_local_checkpoint(comfy):
    """A CLIP classifier over the prompts, whose default target is the weighted prompt; reused."""
    node = comfy.node("CaGTextClassifier")
    inputs = dict(clip_model=TINY_CLIP_NAME, checkpoint=TINY_CLIP, device="auto", prompts="a red fox | snow:0.3",
                  contrast=True, negatives="blurry")
    (classifier,) = run_node(node, **inputs)
    assert classifier.class_names[:3] == ["a red fox", "snow", "blurry"]
    assert classifier.default_target == "a red fox:1 | snow:0.3 | blurry:-1"
    assert run_node(node, **inputs)[0] is classifier


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (dict(prompts="  "), "empty prompt"),
        (dict(prompts="fox", contrast=False), "one class"),
        (dict(clip_model="ViT-B-23 / openai"), "Did you mean"),
        (dict(clip_model="ViT-B-32 / nope"), "no pretrained weights 'nope'"),
        (dict(clip_model="ViT-B-32"), "needs weights"),
        (dict(clip_model="local-dir:/etc"), "local-dir"),
        (dict(templates="a photo of"), "exactly once"),
        (dict(checkpoint="other.safetensors"), "not in models/cag_clip"),
    ],
)
def test_text_classifier_validation(comfy, inputs, words):
    """Bad prompts, models, tags, templates and checkpoints are caught before anything loads."""
    full = dict(clip_model="ViT-B-32 / laion2b_s34b_b79k", checkpoint="none", prompts="a fox", contrast=True,
                negatives="", templates="") | inputs
    result = comfy.pack.NODE_CLASS_MAPPINGS["CaGTextClassifier"].VALIDATE_INPUTS(**full)
    assert isinstance(result, str) and words in result, result


# --------------------------------------------------------------------------------------------
# Images: noise and upsampling


def test_init_noise_is_seeded_and_in_range(comfy):
    """IMAGE [B, H, W, 3] float32 in [0, 1]; the same seed gives the same noise."""
    node = comfy.node("CaGInitNoise")
    (a,) = run_node(node, width=48, height=32, batch_size=2, noise="uniform", seed=7)
    (b,) = run_node(node, width=48, height=32, batch_size=2, noise="uniform", seed=7)
    assert a.shape == (2, 32, 48, 3) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1 and torch.equal(a, b)


@pytest.mark.parametrize(
    ("inputs", "words"),
    [(dict(width=4096, height=64, batch_size=1), "between 1 and 2048"), (dict(width=64, height=64, batch_size=0), "batch_size")],
)
def test_init_noise_validation(comfy, inputs, words):
    result = comfy.pack.NODE_CLASS_MAPPINGS["CaGInitNoise"].VALIDATE_INPUTS(**inputs)
    assert isinstance(result, str) and words in result


@pytest.mark.parametrize(
    ("scale_by", "width", "height", "expected"),
    [(2.0, 0, 0, (48, 80)), (1.0, 120, 0, (72, 120)), (1.0, 0, 48, (48, 80)), (1.0, 64, 64, (64, 64))],
)
def test_upsample_by_factor_or_size(comfy, scale_by, width, height, expected):
    """Factor when both sizes are 0; one size keeps the aspect ratio; both sizes are exact."""
    out, mask = run_node(comfy.node("CaGUpsample"), image=comfy_image(2, 24, 40), scale_by=scale_by, width=width,
                         height=height, method="bicubic")
    assert mask.shape == (2, *expected) and bool((mask == 1).all())  # no mask in: all may change
    assert out.shape == (2, *expected, 3) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1


def test_upsample_keeps_alpha(comfy):
    out, _ = run_node(comfy.node("CaGUpsample"), image=comfy_image(1, 10, 12, channels=4), scale_by=2.0, width=0,
                      height=0, method="nearest")
    assert out.shape == (1, 20, 24, 4)


def _box_mask(batch, height, width):
    """A MASK as Load Image makes it ([B, H, W], 1 = may change), in inference mode."""
    with torch.inference_mode():
        mask = torch.zeros(batch, height, width)
        mask[:, height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
        return mask


def test_mask_survives_the_upsample_between_stages(comfy):
    """Stage 1 with a mask -> CaG Upsample (image and mask) -> stage 2 with the resized mask: in
    each stage the unmasked pixels are that stage's input exactly, also after the 8-bit round trip."""
    classifier = load_classifier(comfy)
    image, mask = comfy_image(1, 16, 24), _box_mask(1, 16, 24)
    stage1, _ = optimize(comfy, image, classifier, mask=mask, steps=3)
    keep = (mask == 0).unsqueeze(-1).expand_as(image)
    assert torch.equal(stage1[keep], image[keep]) and not torch.equal(stage1[~keep], image[~keep])
    up, up_mask = run_node(comfy.node("CaGUpsample"), image=stage1, scale_by=2.0, width=0, height=0,
                           method="bicubic", mask=mask)
    assert up_mask.shape == (1, 32, 48) and up.shape == (1, 32, 48, 3)
    stage2, _ = optimize(comfy, up, classifier, mask=up_mask, steps=3, feather=2)
    keep2 = (up_mask == 0).unsqueeze(-1).expand_as(up)
    assert torch.equal(stage2[keep2], up[keep2])
    to8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    assert torch.equal(to8(stage2)[keep2], to8(up)[keep2])
    # The same half-size mask also works directly: CaG Optimize resizes it to the image.
    direct, _ = optimize(comfy, up, classifier, mask=mask, steps=2)
    assert direct.shape == up.shape


def test_anchor_weight_and_bad_masks_at_the_node(comfy):
    classifier = load_classifier(comfy)
    image = comfy_image(2, 16, 16)
    anchored, _ = optimize(comfy, image, classifier, steps=2, anchor_weight=50.0)
    assert anchored.shape == image.shape
    with pytest.raises(CaGError(comfy), match="empty"):
        optimize(comfy, image, classifier, steps=1, mask=torch.zeros(1, 16, 16))
    with pytest.raises(CaGError(comfy), match="another aspect ratio"):
        optimize(comfy, image, classifier, steps=1, mask=torch.ones(1, 16, 32))
    with pytest.raises(CaGError(comfy), match="batch of 3"):
        optimize(comfy, image, classifier, steps=1, mask=torch.ones(3, 16, 16))
    result = comfy.pack.NODE_CLASS_MAPPINGS["CaGOptimize"].VALIDATE_INPUTS(steps=10, anchor_weight=float("nan"))
    assert isinstance(result, str) and "anchor_weight" in result


def test_init_noise_rows_do_not_depend_on_the_batch_size(comfy):
    """Image i of a batch is that image at any batch size (its own stream), in CaG Init Noise and
    through CaG Optimize."""
    node = comfy.node("CaGInitNoise")
    (three,) = run_node(node, width=16, height=16, batch_size=3, noise="gray", seed=5)
    (one,) = run_node(node, width=16, height=16, batch_size=1, noise="gray", seed=5)
    assert torch.equal(three[:1], one)
    classifier = load_classifier(comfy)
    out3, _ = optimize(comfy, three, classifier, steps=2, seed=8)
    out1, _ = optimize(comfy, one, classifier, steps=2, seed=8)
    assert torch.equal(out3[:1], out1)


# --------------------------------------------------------------------------------------------
# Optimize


def test_optimize_returns_comfy_images(comfy):
    """Under inference mode, with an MAE: float32 CPU IMAGE of the input's shape, in [0, 1]."""
    images, report = optimize(comfy, comfy_image(2, 24, 40), load_classifier(comfy), mae=load_mae(comfy), unique_id="7")
    assert images.shape == (2, 24, 40, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0 <= images.min() and images.max() <= 1
    assert "207: golden retriever" in report and "3 steps" in report


def _spy_on_config(comfy, monkeypatch, field: str, augment: bool = False) -> list:
    """The list that collects OptimizeConfig.<field> (AugmentConfig's with augment=True) of every
    engine call CaG Optimize makes (the engine still runs)."""
    seen = []
    real = comfy.nodes.generation_nodes.optimize

    def spy(*a, config, **k):
        seen.append(getattr(config.augment if augment else config, field))
        return real(*a, config=config, **k)

    monkeypatch.setattr(comfy.nodes.generation_nodes, "optimize", spy)
    return seen


def _spy_on_augment(comfy, monkeypatch, field: str) -> list:
    return _spy_on_config(comfy, monkeypatch, field, augment=True)


def test_crop_center_std_zero_is_the_uniform_recipe(comfy, monkeypatch):
    """The node's crop_center_std reaches the engine: 0 = uniform crops (AugmentConfig center_std None),
    the default = the engine's default centring."""
    seen = _spy_on_augment(comfy, monkeypatch, "center_std")
    classifier, image = load_classifier(comfy), comfy_image(1, 16, 16)
    centred, _ = optimize(comfy, image, classifier, steps=2, seed=3)
    uniform, _ = optimize(comfy, image, classifier, steps=2, seed=3, crop_center_std=0.0)
    assert seen == [0.4, None]
    assert not torch.equal(centred, uniform)


def test_view_blur_reaches_the_engine(comfy, monkeypatch):
    """view_blur is the views' largest blur sigma (default 4, the engine's, recipes lucid_coarse and
    lucid_smoothed; 0 = sharp views, the photo workflows' and the recipe before 2026-12-06)."""
    from cag_core.augment import AugmentConfig

    seen = _spy_on_augment(comfy, monkeypatch, "blur")
    classifier, image = load_classifier(comfy), comfy_image(1, 16, 16)
    blurred, _ = optimize(comfy, image, classifier, steps=2, seed=3)
    sharp, _ = optimize(comfy, image, classifier, steps=2, seed=3, view_blur=0.0)
    assert seen == [AugmentConfig().blur, 0.0] and AugmentConfig().blur == 4.0
    assert not torch.equal(sharp, blurred)


def test_view_noise_reaches_the_engine(comfy, monkeypatch):
    """view_noise is the views' largest noise std (default the engine's; 0 = clean views, the photo
    workflows' and recipe lucid_coarse and those before it)."""
    from cag_core.augment import AugmentConfig

    seen = _spy_on_augment(comfy, monkeypatch, "noise")
    classifier, image = load_classifier(comfy), comfy_image(1, 16, 16)
    default, _ = optimize(comfy, image, classifier, steps=2, seed=3)
    noisy, _ = optimize(comfy, image, classifier, steps=2, seed=3, view_noise=0.5)
    clean, _ = optimize(comfy, image, classifier, steps=2, seed=3, view_noise=0.0)
    assert seen == [AugmentConfig().noise, 0.5, 0.0]
    assert not torch.equal(noisy, clean)


def test_bn_every_reaches_the_engine(comfy, monkeypatch):
    """bn_every measures the BN-statistics prior every n-th step (default the default recipe's 2; 1 =
    every step, the photo workflows'); out of range is refused before a run."""
    from cag_core.optimize import DEFAULT_BN_EVERY

    seen = _spy_on_config(comfy, monkeypatch, "bn_every")
    classifier, image = load_classifier(comfy), comfy_image(1, 16, 16)
    optimize(comfy, image, classifier, steps=2, seed=3)
    optimize(comfy, image, classifier, steps=2, seed=3, bn_every=3)
    assert seen == [DEFAULT_BN_EVERY, 3] and DEFAULT_BN_EVERY == 2
    node = comfy.nodes.generation_nodes.CaGOptimize
    assert node.VALIDATE_INPUTS(steps=10, bn_every=2) is True
    assert "bn_every must be between 1 and 100" in node.VALIDATE_INPUTS(steps=10, bn_every=0)


def test_image_std_reaches_the_engine(comfy, monkeypatch):
    """image_std fixes each image's contrast (default the default recipe's 3.6; 0 = free, the photo
    workflows'; no effect outside fourier); out of range is refused before a run."""
    seen = _spy_on_config(comfy, monkeypatch, "image_std")
    classifier, image = load_classifier(comfy), comfy_image(1, 16, 16)
    fixed, _ = optimize(comfy, image, classifier, steps=2, seed=3)
    free, _ = optimize(comfy, image, classifier, steps=2, seed=3, image_std=0.0)
    optimize(comfy, image, classifier, steps=2, seed=3, parameterization="pixels")
    assert seen == [3.6, None, None] and not torch.equal(free, fixed)
    node = comfy.nodes.generation_nodes.CaGOptimize
    assert node.VALIDATE_INPUTS(steps=10, image_std=3.6) is True
    assert "image_std must be between 0 and 10" in node.VALIDATE_INPUTS(steps=10, image_std=11.0)


def test_decay_power_reaches_the_engine(comfy, monkeypatch):
    """decay_power is the spectrum's fall-off (default the engine's 1.5, recipe lucid_steep; 1 = Lucid's,
    the photo workflows' and the recipes before 2026-12-07); out of range is refused before a run."""
    from cag_core.optimize import OptimizeConfig

    seen = _spy_on_config(comfy, monkeypatch, "decay_power")
    classifier, image = load_classifier(comfy), comfy_image(1, 16, 16)
    steep, _ = optimize(comfy, image, classifier, steps=2, seed=3)
    lucid, _ = optimize(comfy, image, classifier, steps=2, seed=3, decay_power=1.0)
    assert seen == [OptimizeConfig().decay_power, 1.0] and OptimizeConfig().decay_power == 1.5
    assert not torch.equal(steep, lucid)
    node = comfy.nodes.generation_nodes.CaGOptimize
    assert node.VALIDATE_INPUTS(steps=10, decay_power=1.0) is True
    assert "decay_power must be between 0 and 3" in node.VALIDATE_INPUTS(steps=10, decay_power=float("nan"))


def test_crop_max_reaches_the_engine(comfy, monkeypatch):
    """crop_max is the largest crop's area (default 1.0; recipe lucid_tight: 0.6)."""
    seen = _spy_on_augment(comfy, monkeypatch, "crop_scale")
    classifier, image = load_classifier(comfy), comfy_image(1, 16, 16)
    optimize(comfy, image, classifier, steps=1)
    optimize(comfy, image, classifier, steps=1, crop_max=0.6)
    assert seen == [(0.25, 1.0), (0.25, 0.6)]


def test_optimize_accepts_a_loaded_rgba_image(comfy):
    """A non-square RGBA image as LoadImage makes it loses its alpha and keeps its size."""
    images, _ = optimize(comfy, comfy_image(1, 30, 52, channels=4), load_classifier(comfy), steps=1)
    assert images.shape == (1, 30, 52, 3)


def test_optimize_lowers_the_loss(comfy):
    """The output is classified as the target more strongly than the input (whole-image loss)."""
    classifier = load_classifier(comfy)
    image = comfy_image(1, 32, 32)

    def loss(images, target):
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(classifier(images.movedim(-1, 1).clone()), target))

    with torch.no_grad():
        target = classifier(image.movedim(-1, 1).clone()).argmin(-1)  # the least likely class: most to gain
    output, _ = optimize(comfy, image, classifier, target_text=str(int(target)), steps=8, lr=0.02,
                         parameterization="pixels")
    assert loss(output, target) < loss(image, target)


def test_progress_every_step_and_throttled_previews(comfy):
    """Every step updates the bar; JPEG previews come at the first and last step and when due."""
    clock = iter([0.0, 0.1, 0.2, 0.7, 0.8, 0.9]).__next__
    reporter = comfy.nodes.progress.OptimizeProgress(6, "3", interval_s=0.5, clock=clock)
    images = torch.rand(1, 3, 8, 8)
    for step in range(1, 7):
        reporter(step, 6, images, 1.0 / step)
    updates = comfy.progress.updates
    assert [(v, t) for v, t, _ in updates] == [(s, 6) for s in range(1, 7)]
    with_preview = [v for v, _, p in updates if p is not None]
    assert with_preview == [1, 4, 6]
    kind, picture, max_side = updates[0][2]
    assert kind == "JPEG" and picture.size == (8, 8) and max_side == 512


def test_loss_readout_is_sent_to_the_frontend(comfy, prompt_server):
    """With a server, previews come with a 'cag.progress' event for the node's loss readout."""
    optimize(comfy, comfy_image(1, 16, 16), load_classifier(comfy), steps=2, unique_id="12")
    events = [(e, d) for e, d, _ in prompt_server.sent]
    assert events and all(e == "cag.progress" for e, _ in events)
    last = events[-1][1]
    assert last["node"] == "12" and last["step"] == 2 and last["total"] == 2 and isinstance(last["loss"], float)


def test_cancel_stops_within_one_step_and_the_next_run_works(comfy):
    """The interrupt raised by the progress bar ends the run at once, hooks are removed, and
    the same (cached) models run again afterwards."""
    classifier = load_classifier(comfy)
    comfy.progress.interrupt_after = 2
    with pytest.raises(InterruptProcessingException):
        optimize(comfy, comfy_image(1, 16, 16), classifier, steps=50, bn_weight=0.01)
    assert len(comfy.progress.updates) == 2
    bn_layers = [m for m in classifier.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bn_layers and not any(m._forward_hooks for m in bn_layers)
    comfy.progress.updates.clear()
    images, _ = optimize(comfy, comfy_image(1, 16, 16), load_classifier(comfy), steps=2, bn_weight=0.01)
    assert images.shape == (1, 16, 16, 3) and len(comfy.progress.updates) == 2


def test_target_text_overrides_the_combo_per_image(comfy):
    """One target line per image; the report names them."""
    _, report = optimize(comfy, comfy_image(2, 16, 16), load_classifier(comfy), steps=1,
                         target_text="tabby:0.7 | tiger cat:0.3\n1")
    assert "tabby:0.7 | tiger cat:0.3" in report and " / 1:" in report


def test_unknown_class_in_target_text_suggests_close_matches(comfy):
    with pytest.raises(CaGError(comfy), match="Did you mean: 'golden retriever'"):
        optimize(comfy, comfy_image(1, 16, 16), load_classifier(comfy), steps=1, target_text="golden retreiver")


def test_imagenet_combo_on_a_10_class_classifier_asks_for_target_text(comfy):
    with pytest.raises(CaGError(comfy), match="has 10 classes .* write its class in target_text"):
        optimize(comfy, comfy_image(1, 16, 16), load_classifier(comfy, TINY_CLASSIFIER_10), steps=1)


def test_text_classifier_generates_its_prompt_by_default(comfy):
    """An empty target_text with a text classifier optimizes toward its prompts, not the combo."""
    (classifier,) = run_node(comfy.node("CaGTextClassifier"), clip_model=TINY_CLIP_NAME, checkpoint=TINY_CLIP,
                             device="auto", prompts="a red fox", contrast=True)
    _, report = optimize(comfy, comfy_image(1, 20, 28), classifier, steps=2)
    assert report.startswith("a red fox:1")


def test_combined_classifiers_optimize_together(comfy):
    """An ensemble of two classifiers works like one; different class sets are refused."""
    a = load_classifier(comfy)
    b = load_classifier(comfy, TINY_CLASSIFIER_NO_ARCH, architecture=TINY_ARCH)
    (ensemble,) = run_node(comfy.node("CaGCombineClassifiers"), classifier_1=a, weight_1=1.0, classifier_2=b, weight_2=0.5)
    assert ensemble.weights == (1.0, 0.5)
    images, _ = optimize(comfy, comfy_image(1, 16, 16), ensemble, steps=1)
    assert images.shape == (1, 16, 16, 3)
    with pytest.raises(CaGError(comfy), match="share their classes"):
        run_node(comfy.node("CaGCombineClassifiers"), classifier_1=a, weight_1=1.0,
                 classifier_2=load_classifier(comfy, TINY_CLASSIFIER_10), weight_2=1.0)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (dict(steps=100, target_text=""), True),
        (dict(steps=100, target_text=None), True),  # linked
        (dict(steps=0, target_text=""), "steps must be between 1"),
        (dict(steps=10, target_text="fox:-1"), "no class with a positive weight"),
        (dict(steps=10, crop_center_std=0.0), True),
        (dict(steps=10, crop_center_std=float("nan")), "crop_center_std must be between 0 and 4"),
        (dict(steps=10, crop_center_std=-0.5), "crop_center_std must be between 0 and 4"),
        (dict(steps=10, crop_max=0.6), True),
        (dict(steps=10, crop_max=0.1), "crop_max must be between 0.25 and 1"),
        (dict(steps=10, crop_max=float("nan")), "crop_max must be between 0.25 and 1"),
        (dict(steps=10, view_blur=4.0), True),
        (dict(steps=10, view_blur=9.0), "view_blur must be between 0 and 8 px"),
        (dict(steps=10, view_blur=float("nan")), "view_blur must be between 0 and 8 px"),
        (dict(steps=10, view_noise=0.3), True),
        (dict(steps=10, view_noise=1.5), "view_noise must be between 0 and 1"),
        (dict(steps=10, view_noise=float("nan")), "view_noise must be between 0 and 1"),
    ],
)
def test_optimize_validation(comfy, inputs, expected):
    result = comfy.pack.NODE_CLASS_MAPPINGS["CaGOptimize"].VALIDATE_INPUTS(**inputs)
    assert result is True if expected is True else expected in result


# --------------------------------------------------------------------------------------------
# Class picker


def test_class_picker_builds_target_text(comfy):
    node = comfy.node("CaGClassPicker")
    assert run_node(node, class_name="281: tabby", weight=1.0) == ("281: tabby",)
    assert run_node(node, class_name="281: tabby", weight=0.7, mix="tiger cat:0.3") == ("281: tabby:0.7 | tiger cat:0.3",)


@pytest.mark.parametrize(
    ("mix", "expected"),
    [("", True), (None, True), ("tiger cat:0.3 | Persian cat:-1", True), ("golden retreiver", "Did you mean"), ("a\nb", "several lines")],
)
def test_class_picker_validates_imagenet_names(comfy, mix, expected):
    """The picker knows its classifier is ImageNet, so a misspelt class is caught at queue time."""
    result = comfy.pack.NODE_CLASS_MAPPINGS["CaGClassPicker"].VALIDATE_INPUTS(mix=mix)
    assert result is True if expected is True else expected in result


def test_pack_has_no_comfy_imports_outside_nodes():
    """Only nodes/ may import ComfyUI modules (the engine must run without ComfyUI)."""
    offenders = []
    for path in list((REPO_ROOT / "cag_core").rglob("*.py")) + [REPO_ROOT / "__init__.py"]:
        text = Path(path).read_text()
        if any(w in text for w in ("import folder_paths", "import comfy", "from comfy", "from server import")):
            offenders.append(path.name)
    assert offenders == []


def test_out_of_memory_becomes_one_sentence_with_a_smaller_batch(comfy, monkeypatch):
    """A device OOM inside the optimization is reported with the batch size to try."""
    def run_out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(comfy.nodes.generation_nodes, "optimize", run_out_of_memory)
    with pytest.raises(CaGError(comfy), match="Out of memory on cpu generating batch 4 at 40x24: try batch 2"):
        optimize(comfy, comfy_image(4, 24, 40), load_classifier(comfy), steps=1)


def test_upsample_pastes_the_original_back_where_the_mask_is_zero(comfy):
    """With mask and original, the kept region of the upsampled image is the original's own pixels
    at the new size (outpainting: stage 2 keeps the photo sharp); without a mask, original is refused."""
    original = comfy_image(1, 32, 48, seed=3)
    small = comfy_image(1, 16, 24, seed=4)
    mask = _box_mask(1, 32, 48)
    up, up_mask = run_node(comfy.node("CaGUpsample"), image=small, scale_by=2.0, width=0, height=0,
                           method="bicubic", mask=mask, original=original)
    keep = (up_mask == 0).unsqueeze(-1).expand_as(up)
    assert torch.equal(up[keep], original[keep]) and not torch.equal(up[~keep], original[~keep])
    with pytest.raises(CaGError(comfy), match="original needs a mask"):
        run_node(comfy.node("CaGUpsample"), image=small, scale_by=2.0, width=0, height=0, method="bicubic",
                 original=original)
