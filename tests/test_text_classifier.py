"""CLIP text classifier on a tiny random-initialized open_clip model (no download, CPU, seconds)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from cag_core import text_classifier as tc
from cag_core.errors import CaGError, WeightsError
from cag_core.prompt_templates import DEFAULT_CONTRAST, DEFAULT_TEMPLATES
from cag_core.weights import save_file

TINY_NAME = "cag-tiny-test-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)


def make_tiny_clip(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(
        embed_dim=TINY_CFG["embed_dim"],
        vision_cfg=CLIPVisionCfg(**TINY_CFG["vision_cfg"]),
        text_cfg=CLIPTextCfg(**TINY_CFG["text_cfg"]),
    ).eval()


@pytest.fixture(scope="module")
def tokenizer():
    # The real CLIP BPE tokenizer: its vocabulary ships inside the open_clip wheel (works offline).
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture
def tiny():
    return make_tiny_clip()


@pytest.fixture(autouse=True)
def _fresh_caches():
    tc.clear_caches()
    yield
    tc.clear_caches()


@pytest.fixture(scope="module")
def tiny_registered(tmp_path_factory):
    """Register the tiny architecture with open_clip so text_classifier() can build it by name."""
    path = tmp_path_factory.mktemp("cfg") / f"{TINY_NAME}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return TINY_NAME


def images(seed: int = 1, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- parse_prompts ---------------------------------------------------------------------------


def test_parse_prompts_weights_and_separators():
    """'text:weight' entries split on '|' and new lines; weight defaults to 1; other colons stay."""
    assert tc.parse_prompts("a red fox:1.0 | snow:0.3") == [("a red fox", 1.0), ("snow", 0.3)]
    assert tc.parse_prompts("a red fox") == [("a red fox", 1.0)]
    assert tc.parse_prompts("photo: a fox | blur : -0.5\nsky:.25 |") == [("photo: a fox", 1.0), ("blur", -0.5), ("sky", 0.25)]
    assert tc.parse_prompts("at 12:30:1") == [("at 12:30", 1.0)]


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "empty prompt"), ("  | \n ", "empty prompt"), (":0.5", "no text"), ("fox:1e999", "finite")],
)
def test_parse_prompts_rejects_bad_input(text, words):
    """Empty prompts, weights without text and infinite weights fail with a readable CaGError."""
    with pytest.raises(CaGError, match=words):
        tc.parse_prompts(text)


# --- classes, head, logits -------------------------------------------------------------------


def test_classes_and_default_target(tiny, tokenizer):
    """Classes are prompts + negatives + contrast; default_target regenerates the weighted prompt."""
    clf = tc.classifier_from_clip(tiny, tokenizer, "a red fox:1 | snow:0.3", "blurry | an image:2")
    assert clf.class_names[:4] == ["a red fox", "snow", "blurry", "an image"]
    # A contrast prompt equal to a user prompt is dropped rather than duplicated.
    assert clf.class_names[4:] == [c for c in DEFAULT_CONTRAST if c != "an image"]
    assert clf.default_target == "a red fox:1 | snow:0.3 | blurry:-1 | an image:-2"


@pytest.mark.parametrize(
    ("prompts", "negatives", "contrast", "words"),
    [
        ("fox | fox:2", "", None, "more than once"),
        ("fox", "fox", None, "more than once"),
        ("fox:-1", "", None, "positive weight"),
        ("fox", "", [], "one class"),
    ],
)
def test_bad_class_sets_fail(tiny, tokenizer, prompts, negatives, contrast, words):
    """Duplicate prompts, no positive prompt, or a single class are refused with the reason."""
    with pytest.raises(CaGError, match=words):
        tc.classifier_from_clip(tiny, tokenizer, prompts, negatives, contrast=contrast)


def test_bad_template_fails(tiny, tokenizer):
    """A template without exactly one '{}' is refused."""
    with pytest.raises(CaGError, match="exactly once"):
        tc.classifier_from_clip(tiny, tokenizer, "fox", templates=["a photo"])


def test_text_head_columns_are_unit_norm(tiny, tokenizer):
    """build_text_head returns [D, C] with unit-norm columns, batched or not."""
    head = tc.build_text_head(tiny, tokenizer, ["a fox", "snow", "noise"], DEFAULT_TEMPLATES, batch_size=4)
    assert head.shape == (32, 3)
    torch.testing.assert_close(head.norm(dim=0), torch.ones(3))
    torch.testing.assert_close(head, tc.build_text_head(tiny, tokenizer, ["a fox", "snow", "noise"], DEFAULT_TEMPLATES, batch_size=1000))


def test_logits_match_hand_computation(tiny, tokenizer):
    """logits = logit_scale.exp() * normalized image feature @ normalized template-averaged text embeddings."""
    templates = ["{}", "a photo of {}."]
    clf = tc.classifier_from_clip(tiny, tokenizer, "a red fox", contrast=["noise"], templates=templates)
    x = images()
    with torch.no_grad():
        columns = []
        for prompt in ["a red fox", "noise"]:
            per_template = torch.stack([F.normalize(tiny.encode_text(tokenizer([t.format(prompt)]))[0], dim=-1) for t in templates])
            columns.append(F.normalize(per_template.mean(0), dim=-1))
        mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        feats = F.normalize(tiny.encode_image((x - mean) / std), dim=-1)
        expected = tiny.logit_scale.exp() * feats @ torch.stack(columns, dim=1)
        logits, features = clf.logits_and_features(x)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(features, feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(clf(x), logits)


def test_normalization_is_clip_not_imagenet(tiny, tokenizer):
    """mean/std are CLIP's (OPENAI_DATASET_*), input size is the visual tower's, resize is bicubic."""
    clf = tc.classifier_from_clip(tiny, tokenizer, "a fox")
    torch.testing.assert_close(clf.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    torch.testing.assert_close(clf.std.flatten(), torch.tensor(open_clip.OPENAI_DATASET_STD))
    assert not torch.allclose(clf.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    assert clf.input_size == (32, 32) and clf.interpolation == "bicubic"


def test_short_generation_lowers_target_loss(tiny, tokenizer):
    """30 Adam steps on pixels through Classifier.forward cut the cross-entropy toward class 0."""
    clf = tc.classifier_from_clip(tiny, tokenizer, "a red fox", "snow")
    x = images().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    target = torch.zeros(2, dtype=torch.long)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(clf(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(p.grad is None for p in clf.parameters()), "classifier weights must stay frozen"


# --- caches ----------------------------------------------------------------------------------


def test_text_head_is_cached_per_prompt_set(tiny, tokenizer, monkeypatch):
    """The text encoder runs once per (model, classes, templates); a new prompt set runs it again."""
    calls = []
    original = tiny.encode_text
    monkeypatch.setattr(tiny, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = tc.classifier_from_clip(tiny, tokenizer, "a red fox", "snow")
    n_first = len(calls)
    assert n_first > 0
    second = tc.classifier_from_clip(tiny, tokenizer, "a red fox", "snow")
    assert len(calls) == n_first
    torch.testing.assert_close(first.model.text_weights, second.model.text_weights)
    tc.classifier_from_clip(tiny, tokenizer, "a blue fox", "snow")
    assert len(calls) > n_first


def test_model_is_reused_when_only_prompts_change(tiny, tokenizer, tiny_registered, tmp_path):
    """text_classifier loads a checkpoint once; a new prompt reuses the same visual tower."""
    path = tmp_path / "tiny.safetensors"
    save_file(tiny.state_dict(), path)
    a = tc.text_classifier(tiny_registered, "", "a red fox", checkpoint_path=path)
    b = tc.text_classifier(tiny_registered, "", "a blue fox", checkpoint_path=path)
    assert a.model.visual is b.model.visual
    assert a.class_names[0] == "a red fox" and b.class_names[0] == "a blue fox"


# --- loading ---------------------------------------------------------------------------------


def test_local_checkpoint_gives_identical_logits(tiny, tokenizer, tiny_registered, tmp_path):
    """A .safetensors written from the tiny model loads strictly and reproduces its logits."""
    path = tmp_path / "tiny.safetensors"
    save_file(tiny.state_dict(), path)
    loaded = tc.text_classifier(tiny_registered, "", "a red fox", "snow", checkpoint_path=path)
    direct = tc.classifier_from_clip(tiny, tokenizer, "a red fox", "snow")
    assert loaded.class_names == direct.class_names and "tiny.safetensors" in loaded.name
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()), direct(images()))


def test_wrong_checkpoint_names_the_keys(tiny, tiny_registered, tmp_path):
    """A checkpoint with missing/unexpected keys fails with a WeightsError that names them."""
    state = tiny.state_dict()
    state.pop("visual.proj")
    state["visual.bogus_extra"] = torch.zeros(3)
    path = tmp_path / "wrong.safetensors"
    save_file(state, path)
    with pytest.raises(WeightsError, match=r"wrong\.safetensors.*visual\.proj.*visual\.bogus_extra"):
        tc.text_classifier(tiny_registered, "", "a fox", checkpoint_path=path)


def test_checkpoint_of_another_size_fails_clearly(tiny_registered, tmp_path):
    """Shape mismatches and HF-transformers layouts are explained, not raised as raw errors."""
    path = tmp_path / "other.safetensors"
    state = make_tiny_clip().state_dict()
    state["visual.proj"] = torch.zeros(32, 64)
    save_file(state, path)
    with pytest.raises(WeightsError, match="does not fit"):
        tc.text_classifier(tiny_registered, "", "a fox", checkpoint_path=path)
    hf = tmp_path / "hf.safetensors"
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(2)}, hf)
    with pytest.raises(WeightsError, match="transformers"):
        tc.text_classifier(tiny_registered, "", "a fox", checkpoint_path=hf)


def test_offline_download_failure_says_what_to_download(monkeypatch):
    """When open_clip cannot download a tag, the error names the file, the folder and the alternative."""

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(CaGError) as info:
        tc.text_classifier("ViT-B-32", "openai", "a fox")
    message = str(info.value)
    assert "timm/vit_base_patch32_clip_224.openai" in message
    assert "open_clip_model.safetensors" in message
    assert tc.CHECKPOINT_FOLDER_HINT in message and "checkpoint file" in message


def test_unknown_names_list_valid_choices():
    """Unknown architectures and tags fail before any loading, listing what is valid."""
    with pytest.raises(CaGError, match="Available: .*ViT-B-32"):
        tc.text_classifier("ViT-Q-99", "openai", "a fox")
    with pytest.raises(CaGError, match="Available: .*laion2b_s34b_b79k"):
        tc.text_classifier("ViT-B-32", "nonsense", "a fox")
    with pytest.raises(CaGError, match="needs weights"):
        tc.text_classifier("ViT-B-32", "", "a fox")


def test_list_clip_models_for_dropdown():
    """list_clip_models proxies open_clip.list_pretrained() as 'arch / tag' strings."""
    choices = tc.list_clip_models()
    assert "ViT-B-32 / openai" in choices and len(choices) == len(open_clip.list_pretrained())


# --- ComfyUI's inference mode ----------------------------------------------------------------


def test_built_in_inference_mode_still_gives_gradients(tokenizer, tiny_registered, tmp_path):
    """Built inside inference_mode (as ComfyUI runs nodes), the classifier backpropagates to the image."""
    path = tmp_path / "tiny.safetensors"
    save_file(make_tiny_clip().state_dict(), path)
    with torch.inference_mode():
        inference_built = make_tiny_clip()  # its parameters are inference tensors
        from_model = tc.classifier_from_clip(inference_built, tokenizer, "a red fox", "snow")
        from_file = tc.text_classifier(tiny_registered, "", "a red fox", "snow", checkpoint_path=path)
    for clf in (from_model, from_file):
        with torch.inference_mode(False), torch.enable_grad():
            x = images().requires_grad_(True)
            F.cross_entropy(clf(x), torch.zeros(2, dtype=torch.long)).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_cli_generates_from_a_text_prompt_with_a_local_checkpoint(tiny_registered, tmp_path, capsys):
    """`python -m cag_core generate --text ... --clip model@checkpoint` runs end to end offline."""
    from PIL import Image

    from cag_core.cli import main

    checkpoint = tmp_path / "tiny_clip.safetensors"
    save_file(make_tiny_clip().state_dict(), checkpoint)
    out = tmp_path / "fox.png"
    code = main(["generate", "--text", "a red fox:1 | snow:0.3", "--negative", "blurry",
                 "--clip", f"{tiny_registered}@{checkpoint}", "--sizes", "16", "24", "--steps", "3",
                 "--crops", "2", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (24, 24)
    assert "a red fox" in capsys.readouterr().out
