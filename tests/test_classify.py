"""Classifying images: the engine (cag_core.classify), the CaG Classify node, and `python -m cag_core classify`.

Node tests call the node inside torch.inference_mode(), as ComfyUI does (conftest.run_node).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSIFIER, TINY_CLASSIFIER_NO_ARCH, TINY_CLIP, TINY_CLIP_NAME, comfy_image, run_node
from PIL import Image
from tiny import TINY_ARCH, save_tiny_classifier, tiny_classifier

from cag_core.classifier import combine
from cag_core.classify import class_probabilities, classify, target_probability
from cag_core.cli import main
from cag_core.errors import CaGError
from cag_core.targets import parse_target


def engine_images(batch=3, height=20, width=28, seed=0):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def softmax(classifier, images):
    with torch.no_grad():
        return classifier(images).softmax(-1)


def close(got, expected):
    """Relative closeness: the tiny nets' probabilities span 1e-13..1, so an absolute tolerance
    would let a wrong formula pass on the small ones."""
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected), rtol=1e-4, atol=0)


# --------------------------------------------------------------------------------------------
# Engine


def test_probabilities_are_the_classifiers_softmax_in_any_batch_size():
    """One forward or several chunks: the classifier's own softmax, rows summing to 1."""
    classifier, images = tiny_classifier(), engine_images(5)
    expected = softmax(classifier, images)
    for batch_size in (1, 2, 16):
        got = class_probabilities(classifier, images, batch_size=batch_size)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(-1), torch.ones(5))


def test_ensemble_probabilities_are_the_weighted_mean_of_the_members():
    a, b = tiny_classifier(seed=0), tiny_classifier(seed=1, size=24)
    images = engine_images(2)
    expected = (1.0 * softmax(a, images) + 0.5 * softmax(b, images)) / 1.5
    got = class_probabilities(combine(a, b, weights=[1.0, 0.5]), images)
    top = expected.topk(3, dim=-1).indices  # the classes that carry the probability
    close(got.gather(1, top), expected.gather(1, top))
    torch.testing.assert_close(got, expected)


def test_images_of_different_sizes_are_classified_each_at_the_classifiers_size():
    """A list of [3, H, W] images of several sizes gives what each gives alone."""
    classifier = tiny_classifier()
    images = [engine_images(1, 20, 28, seed=i)[0] for i in range(2)] + [engine_images(1, 40, 16, seed=2)[0]]
    expected = torch.cat([softmax(classifier, image[None]) for image in images])
    torch.testing.assert_close(class_probabilities(classifier, images), expected, rtol=1e-5, atol=1e-6)


def test_p_target_of_a_mix_is_the_positive_weighted_sum():
    """'a:7 | b:3 | c:-1' -> 0.7 p(a) + 0.3 p(b) (positive weights normalized; negatives left out),
    on the image's two most likely classes, so that every term counts."""
    classifier, batch = tiny_classifier(), engine_images(16)
    second = softmax(classifier, batch).topk(2).values[:, 1]
    images = batch[int(second.argmax())][None]  # the image least sure of its class
    p = softmax(classifier, images)[0]
    a, b, c = (int(i) for i in p.topk(3).indices)
    result = classify(classifier, images, top_k=3, target=f"class {a}:7 | class {b}:3 | class {c}:-1")
    assert 0.01 < float(p[b]) and float(p[a]) < 0.99  # the mix differs from either class alone
    close(result.p_target, (0.7 * p[a] + 0.3 * p[b])[None])
    listed = [(s.index, w) for s, w in result.images[0].target_classes]
    assert listed == [(a, pytest.approx(0.7)), (b, pytest.approx(0.3)), (c, -1.0)]
    assert "p(target)" in result.report() and f"class {c} (weight -1)" in result.report()


def test_p_target_by_hand():
    """Probabilities (0.5, 0.3, 0.2): 'a:7 | b:3 | c:-1' -> 0.7 x 0.5 + 0.3 x 0.3 = 0.44; 'c' -> 0.2."""
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    target = parse_target("a:7 | b:3 | c:-1\nc", ["a", "b", "c"], 2)
    close(target_probability(probabilities, target), torch.tensor([0.44, 0.2]))


def test_target_lines_cycle_over_the_batch():
    classifier, images = tiny_classifier(), engine_images(3)
    p = softmax(classifier, images)
    a, b = (int(i) for i in p[1].topk(2).indices)  # a likely and a less likely class
    result = classify(classifier, images, target=f"class {a}\n{b}")
    assert [image.target for image in result.images] == [f"class {a}", str(b), f"class {a}"]
    close(result.p_target, torch.stack([p[0, a], p[1, b], p[2, a]]))
    target = parse_target(f"class {a}\n{b}", classifier.class_names, 3)
    close(target_probability(result.probabilities, target), result.p_target)


def test_top_k_is_sorted_and_capped_at_the_number_of_classes():
    classifier, images = tiny_classifier(num_classes=10), engine_images(1)
    result = classify(classifier, images, top_k=20)
    probabilities = [s.probability for s in result.images[0].top]
    assert len(probabilities) == 10 and probabilities == sorted(probabilities, reverse=True)
    assert result.images[0].top[0].index == int(softmax(classifier, images).argmax())
    assert result.p_target is None and "p(target)" not in result.report()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(top_k=0), "top_k must be"),
        (dict(target="99"), "out of range"),
        (dict(target="clas 1"), "Unknown class 'clas 1'"),
        (dict(target="class 1:-1"), "no class with a positive weight"),
        (dict(images01=torch.rand(0, 3, 8, 8)), "No images"),
        (dict(images01=torch.rand(2, 4, 8, 8)), "Expected RGB images"),
        (dict(images01=[torch.rand(3, 8, 8), torch.full((3, 4, 4), float("inf"))]), "48 NaN or Inf values"),
    ],
)
def test_bad_input_is_one_sentence(kwargs, words):
    arguments = dict(images01=engine_images(1)) | kwargs
    with pytest.raises(CaGError, match=words) as caught:
        classify(tiny_classifier(), **arguments)
    assert "\n" not in str(caught.value)


def test_works_under_inference_mode():
    """ComfyUI calls nodes under inference mode: the forward runs, no autograd graph is kept."""
    classifier = tiny_classifier()
    with torch.inference_mode():
        images = engine_images(2)
        result = classify(classifier, images, target="class 2")
    assert not result.probabilities.requires_grad
    torch.testing.assert_close(result.probabilities, softmax(classifier, images.clone()))


# --------------------------------------------------------------------------------------------
# The node


def load(comfy, source=TINY_CLASSIFIER, architecture=""):
    return run_node(comfy.node("CaGLoadClassifier"), source=source, architecture=architecture, device="auto")[0]


def classify_node(comfy, image, classifier, top_k=5, **optional):
    out = run_node(comfy.node("CaGClassify"), image=image, classifier=classifier, top_k=top_k, **optional)
    assert set(out) == {"ui", "result"} and out["ui"]["text"] == [out["result"][0]]
    return out["result"]


def skimage_image(name):
    """scikit-image's photo as a ComfyUI IMAGE [1, H, W, 3], made in inference mode like LoadImage's."""
    data = pytest.importorskip("skimage.data")
    with torch.inference_mode():
        return torch.from_numpy(getattr(data, name)()).float().div(255)[None]


def top_line(report: str, image: int = 1) -> str:
    lines = report.splitlines()
    return lines[lines.index(f"image {image}:") + 1]


@pytest.mark.parametrize(("photo", "expected"), [("chelsea", range(281, 286)), ("coffee", [967])])
def test_top_1_on_photos_matches_the_classifiers_own_prediction(comfy, photo, expected):
    """The embedded Lite0 (real weights): the node's top-1 and its probability are what the classifier
    predicts when called without the node (a domestic cat for chelsea(), espresso for coffee())."""
    image = skimage_image(photo)
    reference = comfy.cag_core.timm_classifier.embedded_classifier("efficientnet-lite0")
    p = softmax(reference, image.movedim(-1, 1).clone())[0]
    top = int(p.argmax())
    assert top in expected
    report, p_target = classify_node(comfy, image, load(comfy, "efficientnet-lite0"), top_k=3, target_text=str(top))
    assert top_line(report).split()[1] == f"{top}:"
    assert p_target == pytest.approx(float(p[top]), abs=1e-5)
    assert f"{float(p[top]):.3f}" in top_line(report)


def test_grayscale_and_rgba_images_classify_like_rgb(comfy):
    """Grayscale is repeated over RGB and RGBA loses its alpha, as in CaG Optimize."""
    classifier = load(comfy)
    rgb = comfy_image(1, 24, 40)
    gray = rgb[..., :1]
    with torch.inference_mode():
        rgba = torch.cat([rgb, torch.zeros_like(gray)], dim=-1)
    assert classify_node(comfy, rgba, classifier) == classify_node(comfy, rgb, classifier)
    assert classify_node(comfy, gray, classifier) == classify_node(comfy, gray.expand(-1, -1, -1, 3), classifier)


def test_a_batch_with_per_image_targets_reports_each_and_averages_p(comfy):
    classifier = load(comfy)
    images = comfy_image(3, 20, 28)
    p = softmax(classifier, images.movedim(-1, 1).clone())
    a, b = (int(i) for i in p[0].topk(2).indices)
    c = int(p[1].topk(2).indices[1])
    report, p_target = classify_node(comfy, images, classifier, top_k=2, target_text=f"{a}:0.7 | {b}:0.3\n{c}")
    per_image = torch.stack([0.7 * p[0, a] + 0.3 * p[0, b], p[1, c], 0.7 * p[2, a] + 0.3 * p[2, b]])
    assert p_target == pytest.approx(float(per_image.mean()), rel=1e-4)
    assert [line for line in report.splitlines() if line.startswith("image ")] == ["image 1:", "image 2:", "image 3:"]
    assert report.count("p(target)") == 3 and f"target '{c}'" in report


def test_an_ensemble_node_input_works(comfy):
    a, b = load(comfy), load(comfy, TINY_CLASSIFIER_NO_ARCH, architecture=TINY_ARCH)
    (ensemble,) = run_node(comfy.node("CaGCombineClassifiers"), classifier_1=a, weight_1=1.0, classifier_2=b, weight_2=3.0)
    image = comfy_image(1, 24, 24)
    x = image.movedim(-1, 1).clone()
    p = (softmax(a, x) + 3 * softmax(b, x)) / 4
    second = int(p[0].topk(2).indices[1])
    report, p_target = classify_node(comfy, image, ensemble, target_text=str(second))
    assert p_target == pytest.approx(float(p[0, second]), rel=1e-4)
    assert top_line(report).split()[1] == f"{int(p.argmax())}:"
    assert report.startswith(f"classifier: {ensemble.name}")


def test_a_text_classifier_is_classified_over_its_prompts(comfy):
    (clip,) = run_node(comfy.node("CaGTextClassifier"), clip_model=TINY_CLIP_NAME, checkpoint=TINY_CLIP, device="auto",
                       prompts="a red fox | snow", contrast=True)
    image = comfy_image(1, 20, 28)
    p = softmax(clip, image.movedim(-1, 1).clone())[0]
    report, p_target = classify_node(comfy, image, clip, top_k=20, target_text="a red fox")
    assert p_target == pytest.approx(float(p[0]), rel=1e-4)
    top = [line for line in report.splitlines() if line.startswith("  ") and "p(target)" not in line]
    assert len(top) == clip.num_classes  # top_k 20 > the classes: all of them
    assert top[0].split("  ")[-1] == clip.class_names[int(p.argmax())]


def test_no_target_gives_zero_and_no_target_lines(comfy):
    report, p_target = classify_node(comfy, comfy_image(2, 16, 16), load(comfy), top_k=1, target_text="  ")
    assert p_target == 0.0 and "p(target)" not in report
    assert len([line for line in report.splitlines() if line.startswith("  ")]) == 2


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (dict(top_k=5, target_text=""), True),
        (dict(top_k=None, target_text=None), True),  # linked
        (dict(top_k=0), "top_k must be a whole number between 1 and 20"),
        (dict(top_k=21), "between 1 and 20"),
        (dict(top_k=5, target_text="tabby:-1"), "no class with a positive weight"),
    ],
)
def test_validation_at_queue_time(comfy, inputs, expected):
    result = comfy.pack.NODE_CLASS_MAPPINGS["CaGClassify"].VALIDATE_INPUTS(**inputs)
    assert result is True if expected is True else expected in result


@pytest.mark.parametrize(
    ("image", "kwargs", "words"),
    [
        ("nan", {}, "NaN or Inf"),
        ("empty", {}, "is empty"),
        ("flat", {}, "shape \\[batch, height, width, channels\\]"),
        ("ok", dict(top_k=0), "top_k must be"),
        ("ok", dict(target_text="golden retreiver"), "Did you mean: 'golden retriever'"),
    ],
)
def test_bad_node_input_is_one_sentence(comfy, image, kwargs, words):
    with torch.inference_mode():
        images = {
            "nan": torch.full((1, 8, 8, 3), float("nan")),
            "empty": torch.rand(0, 8, 8, 3),
            "flat": torch.rand(8, 8, 3),
            "ok": torch.rand(1, 8, 8, 3),
        }[image]
    inputs = dict(top_k=5) | kwargs
    with pytest.raises(comfy.cag_core.errors.CaGError, match=words) as caught:
        run_node(comfy.node("CaGClassify"), image=images, classifier=load(comfy), **inputs)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Command line


def write_png(path, pixels: np.ndarray):
    Image.fromarray(pixels).save(path)
    return str(path)


def test_cli_prints_what_the_engine_says(tmp_path, capsys):
    """Two files (RGB and grayscale), an ensemble of two weight files, and a target per image."""
    rng = np.random.default_rng(0)
    rgb = write_png(tmp_path / "a.png", rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    gray = write_png(tmp_path / "b.png", rng.integers(0, 256, (24, 24), dtype=np.uint8))
    specs = [str(save_tiny_classifier(tmp_path / f"tiny{seed}.safetensors", 1000, seed)) for seed in (0, 1)]
    args = ["classify", "--classifier", specs[0], "--classifier", f"{specs[1]}@{TINY_ARCH}", "--top-k", "3",
            "--target", "tabby; 7", "--device", "cpu", rgb, gray]
    assert main(args) == 0
    out = capsys.readouterr().out

    from cag_core.cli_classify import read_image
    from cag_core.timm_classifier import load_classifier

    ensemble = combine(*(load_classifier(spec) for spec in specs))
    expected = classify(ensemble, [read_image(rgb), read_image(gray)], top_k=3, target="tabby; 7")
    assert out.strip() == expected.report(labels=[rgb, gray])
    assert f"{rgb}:" in out and out.count("p(target)") == 2 and "target '7'" in out


def test_cli_default_classifier_is_the_embedded_lite0(capsys):
    skimage_data = pytest.importorskip("skimage.data")
    import os

    path = os.path.join(os.path.dirname(skimage_data.__file__), "coffee.png")
    assert main(["classify", "--top-k", "1", "--device", "cpu", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("classifier: efficientnet-lite0") and "967: espresso" in out


@pytest.mark.parametrize(
    ("extra", "words"),
    [(["missing.png"], "does not exist"), (["--target", "golden retreiver", "IMAGE"], "Did you mean"),
     (["--top-k", "0", "IMAGE"], "--top-k must be at least 1")],
)
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys, extra, words):
    image = write_png(tmp_path / "x.png", np.zeros((8, 8, 3), dtype=np.uint8))
    spec = str(save_tiny_classifier(tmp_path / "tiny.safetensors", 1000))
    args = ["classify", "--classifier", spec, "--device", "cpu"] + [image if a == "IMAGE" else a for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err


def test_cli_refuses_a_file_that_is_not_an_image(tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not a picture")
    assert main(["classify", "--device", "cpu", str(tmp_path / "notes.png")]) == 2
    assert "could not be read as an image" in capsys.readouterr().err
