"""Reliability and security through the node layer: untrusted workflow values get one clear
sentence (at queue time where possible), faults during a run never return a garbage image, the
process survives many runs with flat memory, and nothing unsafe loads.

Nodes are called the way ComfyUI calls them: VALIDATE_INPUTS on the class outside inference
mode, FUNCTION inside `torch.inference_mode()` (conftest.run_node), with ComfyUI stubbed.
The same checks against a real ComfyUI server are in tests/test_server.py.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import math
import os
import pickle
import re
import socket
import sys
import warnings
import weakref
from pathlib import Path

import pytest
import torch
from conftest import (
    PACK_NAME,
    TINY_CLASSIFIER,
    TINY_MAE,
    InterruptProcessingException,
    comfy_image,
    load_pack,
    run_node,
)
from tiny import TINY_ARCH, tiny_timm_model

from cag_core.weights import save_file

OPTIMIZE = dict(
    target_class="207: golden retriever", steps=2, lr=0.05, crops=1, parameterization="fourier", mask_ratio=0.75,
    diversity_weight=0.0, bn_weight=0.0, tv_weight=0.0, seed=0,
)
UPSAMPLE = dict(scale_by=2.0, width=0, height=0, method="bicubic")
TRACEBACK_SIGNS = ("Traceback", 'File "', "\n", "<module>", "^^^")


def assert_one_sentence(message: str, *must_contain: str) -> None:
    """One readable line that names the bad value: no traceback text, ends like a sentence."""
    assert isinstance(message, str) and message.strip(), message
    assert not any(sign in message for sign in TRACEBACK_SIGNS), message
    assert message.rstrip().endswith((".", "?")), message
    assert len(message) < 700, message
    for words in must_contain:
        assert words in message, f"{words!r} not in {message!r}"


def errors(comfy):
    return comfy.cag_core.errors


def node_class(comfy, key):
    return comfy.pack.NODE_CLASS_MAPPINGS[key]


def load_classifier(comfy, source=TINY_CLASSIFIER, architecture=""):
    return run_node(comfy.node("CaGLoadClassifier"), source=source, architecture=architecture, device="auto")[0]


def load_mae(comfy, name=TINY_MAE, size="auto"):
    return run_node(comfy.node("CaGLoadMAE"), mae_file=name, size=size, device="auto")[0]


def optimize(comfy, image, classifier, **overrides):
    return run_node(comfy.node("CaGOptimize"), image=image, classifier=classifier, **{**OPTIMIZE, **overrides})


def refused(comfy, call, *must_contain, kind=None):
    """Run `call`; it must raise a CaGError (or `kind`) whose message is one sentence naming the value."""
    with pytest.raises(kind or errors(comfy).CaGError) as info:
        call()
    assert_one_sentence(str(info.value), *must_contain)
    return str(info.value)


@pytest.fixture
def model_file(comfy):
    """Write files into a model folder for one test; removed afterwards."""
    written: list[Path] = []

    def write(folder: str, name: str, data: bytes | None = None) -> Path:
        path = comfy.models_dir / folder / name
        if data is not None:
            path.write_bytes(data)
        written.append(path)
        return path

    yield write
    for path in written:
        if path.is_symlink() or path.exists():
            path.unlink()


# --------------------------------------------------------------------------------------------
# Safe loading, through the loader nodes


class _CreatesFile:
    """Unpickling this would create a file: the payload of a malicious checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_checkpoints(victim: Path) -> dict[str, bytes]:
    """Malicious checkpoints in the forms a user might download, as bytes."""
    import io

    def torch_bytes(obj):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    tensors = {"w": torch.zeros(2)}
    return {
        # plain pickle.dump: protocol 4+ fails on an opcode torch.save never writes, protocol 2 on the global
        "plain_pickle.pth": pickle.dumps({"state_dict": tensors, "x": _CreatesFile(str(victim))}),
        "plain_pickle_protocol2.pt": pickle.dumps({"state_dict": tensors, "x": _CreatesFile(str(victim))}, protocol=2),
        "zip_payload.pth": torch_bytes({"model": tensors, "payload": _CreatesFile(str(victim))}),
        # facebookresearch/mae checkpoints carry `args`; the MAE loader allows argparse.Namespace
        # there, and nothing else.
        "payload_in_args.pth": torch_bytes({"model": tensors, "args": _CreatesFile(str(victim))}),
        "payload_as_tensor_dict.bin": torch_bytes({"w": _CreatesFile(str(victim)), "v": torch.zeros(1)}),
    }


@pytest.mark.parametrize("loader", ["classifier", "mae"])
def test_malicious_checkpoint_in_a_model_folder_is_refused_by_the_loader_nodes(comfy, model_file, tmp_path, loader):
    """A workflow that picks a code-running .pth/.bin gets a refusal with the conversion command,
    and the file its pickle would create never appears."""
    proof = tmp_path / "proof.txt"
    pickle.loads(pickle.dumps(_CreatesFile(str(proof))))  # the payload is live: plain unpickling runs it
    assert proof.exists()
    victim = tmp_path / "pwned.txt"
    for name, data in _evil_checkpoints(victim).items():
        if loader == "classifier":
            model_file("classifiers", name, data)
            message = refused(comfy, lambda: load_classifier(comfy, name, TINY_ARCH), name, "refused", "convert",
                              kind=errors(comfy).WeightsError)
        else:
            model_file("mae", name, data)
            message = refused(comfy, lambda: load_mae(comfy, name), name, "refused", kind=errors(comfy).WeightsError)
        assert "safetensors" in message
        if name != "plain_pickle.pth":
            assert "needs arbitrary code to load (it pickles " in message, message
        assert not victim.exists(), f"{name}: the pickle ran"


def test_symlinked_folder_leaving_the_model_folder_is_refused(comfy, model_file, tmp_path):
    """A linked sub-folder pointing outside is refused like a linked file; nothing is read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.safetensors").write_bytes(b"not read")
    model_file("classifiers", "linked_dir").symlink_to(outside, target_is_directory=True)
    refused(comfy, lambda: load_classifier(comfy, "linked_dir/x.safetensors", TINY_ARCH), "outside the cag_classifiers")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("/etc/passwd.safetensors", "absolute path"),
        ("..\\..\\etc\\x.safetensors", "'..'"),
        ("sub/../../x.pth", "'..'"),
        ("a\x00b.safetensors", "not found"),
        ("", "No file chosen"),
        ("weights.pkl", "extension"),
    ],
)
def test_model_file_names_from_a_workflow_are_confined_at_the_node(comfy, name, words):
    """The MAE loader (no VALIDATE_INPUTS: ComfyUI's combo check runs first in a server) refuses
    names that could leave its folder, with one sentence."""
    refused(comfy, lambda: load_mae(comfy, name), words)


# --------------------------------------------------------------------------------------------
# Clear errors for bad files


def test_wrong_architecture_names_missing_and_unexpected_keys(comfy):
    message = refused(comfy, lambda: load_classifier(comfy, TINY_CLASSIFIER, "resnet18"),
                      TINY_CLASSIFIER, "does not fit architecture 'resnet18'", "missing keys: conv1.weight",
                      "unexpected keys:", kind=errors(comfy).WeightsError)
    assert "in all)" in message  # long key lists are shortened, not dumped


@pytest.mark.parametrize("folder", ["classifiers", "mae"])
@pytest.mark.parametrize("form", ["truncated", "garbage"])
def test_corrupt_or_truncated_files_give_one_sentence(comfy, model_file, folder, form):
    source = comfy.models_dir / folder / (TINY_CLASSIFIER if folder == "classifiers" else TINY_MAE)
    good = source.read_bytes()
    for suffix in (".safetensors", ".pth"):
        name = f"broken_{form}{suffix}"
        data = good[: len(good) // 2] if form == "truncated" else os.urandom(4096)
        model_file(folder, name, data)
        if folder == "classifiers":
            call = lambda: load_classifier(comfy, name, TINY_ARCH)  # noqa: E731
        else:
            call = lambda: load_mae(comfy, name)  # noqa: E731
        refused(comfy, call, name, kind=errors(comfy).WeightsError)


# --------------------------------------------------------------------------------------------
# Clear errors for bad values, at queue time (VALIDATE_INPUTS) and at the node


@pytest.mark.parametrize(
    ("key", "inputs", "words"),
    [
        ("CaGInitNoise", dict(width=0, height=64, batch_size=1), "between 1 and 2048"),
        ("CaGInitNoise", dict(width=64, height=-8, batch_size=1), "between 1 and 2048"),
        ("CaGInitNoise", dict(width=64, height=4096, batch_size=1), "4096"),
        ("CaGInitNoise", dict(width=64, height=64, batch_size=65), "batch_size must be between 1 and 64"),
        ("CaGUpsample", dict(width=4096, height=0, scale_by=2.0), "width must be 0"),
        ("CaGUpsample", dict(width=0, height=-1, scale_by=2.0), "height must be 0"),
        ("CaGUpsample", dict(width=0, height=0, scale_by=math.nan), "scale_by must be a number"),
        ("CaGUpsample", dict(width=0, height=0, scale_by=math.inf), "got inf"),
        ("CaGUpsample", dict(width=0, height=0, scale_by=0.0), "between 0.125 and 16"),
        ("CaGOptimize", dict(steps=0, target_text=""), "steps must be between 1 and 10000, got 0"),
        ("CaGOptimize", dict(steps=10001, target_text=""), "got 10001"),
        ("CaGOptimize", dict(steps=5, target_text="tabby:1e999"), "weights must be finite"),
        ("CaGOptimize", dict(steps=5, target_text="tabby:0 | dog:-1"), "no class with a positive weight"),
        ("CaGClassPicker", dict(weight=1.0, mix="golden retreiver"), "Did you mean: 'golden retriever'"),
        ("CaGClassPicker", dict(weight=math.nan, mix=""), "weight must be a number between 0.01 and 100, got nan"),
        ("CaGLoadClassifier", dict(source="../classifiers/tiny_timm.safetensors", architecture=""), "not available"),
        ("CaGLoadClassifier", dict(source=TINY_CLASSIFIER, architecture="resnet5O"), "Close matches: resnet50"),
        ("CaGTextClassifier", dict(prompts=""), "empty prompt"),
        ("CaGTextClassifier", dict(prompts="fox:1e999"), "weights must be finite"),
    ],
)
def test_bad_values_are_refused_at_queue_time_with_one_sentence(comfy, key, inputs, words):
    """VALIDATE_INPUTS returns the sentence (ComfyUI answers /prompt with 400 and it); NaN and Inf
    are caught here because they pass ComfyUI's own min/max comparison."""
    if key == "CaGTextClassifier":
        inputs = dict(clip_model="ViT-B-32 / laion2b_s34b_b79k", checkpoint="none", contrast=True, negatives="",
                      templates="") | inputs
    result = node_class(comfy, key).VALIDATE_INPUTS(**inputs)
    assert isinstance(result, str), f"{key}{inputs} passed validation"
    assert_one_sentence(result, words)


def test_good_and_linked_values_pass_validation(comfy):
    """Linked inputs arrive as None at queue time and must not be refused."""
    assert node_class(comfy, "CaGUpsample").VALIDATE_INPUTS(width=0, height=0, scale_by=2.0) is True
    assert node_class(comfy, "CaGUpsample").VALIDATE_INPUTS(width=None, height=None, scale_by=None) is True
    assert node_class(comfy, "CaGClassPicker").VALIDATE_INPUTS(weight=0.5, mix="tabby:0.3") is True
    assert node_class(comfy, "CaGClassPicker").VALIDATE_INPUTS(weight=None, mix=None) is True
    assert node_class(comfy, "CaGOptimize").VALIDATE_INPUTS(steps=None, target_text=None) is True
    assert node_class(comfy, "CaGInitNoise").VALIDATE_INPUTS(width=None, height=None, batch_size=None) is True


def test_unknown_class_and_index_out_of_range_at_the_optimize_node(comfy):
    """Target text is resolved against the classifier before the first step."""
    classifier = load_classifier(comfy)
    image = comfy_image(1, 16, 16)
    refused(comfy, lambda: optimize(comfy, image, classifier, target_text="golden retreiver"),
            "Unknown class 'golden retreiver'", "Did you mean: 'golden retriever'")
    refused(comfy, lambda: optimize(comfy, image, classifier, target_text="1000"),
            "Class index 1000 is out of range", "0..999")
    refused(comfy, lambda: optimize(comfy, image, classifier, target_text="-3"), "Class index -3")
    refused(comfy, lambda: optimize(comfy, image, classifier, target_class="", target_text=""), "The target is empty")


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (dict(steps=0), "steps must be at least 1, got 0"),
        (dict(lr=math.nan), "lr must be a positive number, got nan"),
        (dict(lr=0.0), "lr must be a positive number"),
        (dict(mask_ratio=math.nan), "mask_ratio"),
        (dict(mask_ratio=1.0), "mask_ratio must be in [0, 1), got 1.0"),
        (dict(crops=0), "crops must be at least 1, got 0"),
        (dict(tv_weight=math.inf), "tv_weight must be a non-negative number"),
        (dict(bn_weight=-1.0), "bn_weight"),
        (dict(parameterization="wavelets"), "Unknown parameterization 'wavelets'"),
    ],
)
def test_unusable_settings_at_the_optimize_node(comfy, overrides, words):
    """Values that skip ComfyUI's widget limits (API prompts, NaN) fail before any step runs."""
    refused(comfy, lambda: optimize(comfy, comfy_image(1, 16, 16), load_classifier(comfy), **overrides), words)
    assert comfy.progress.updates == []  # no step ran


def test_empty_prompt_at_the_text_classifier_node(comfy):
    """The node checks the prompt before it loads any model."""
    node = comfy.node("CaGTextClassifier")
    refused(comfy, lambda: run_node(node, clip_model="ViT-B-32 / laion2b_s34b_b79k", checkpoint="none", device="auto",
                                    prompts=" | \n ", contrast=True), "empty prompt")


def test_weight_and_scale_checks_at_the_node_too(comfy):
    """Direct calls (scripts, other packs) get the same sentences as VALIDATE_INPUTS."""
    refused(comfy, lambda: run_node(comfy.node("CaGClassPicker"), class_name="281: tabby", weight=math.nan),
            "weight must be a number")
    refused(comfy, lambda: run_node(comfy.node("CaGUpsample"), image=comfy_image(1, 8, 8), **{**UPSAMPLE, "scale_by": math.nan}),
            "scale_by must be a number")
    refused(comfy, lambda: run_node(comfy.node("CaGCombineClassifiers"), classifier_1=load_classifier(comfy),
                                    weight_1=math.nan, classifier_2=load_classifier(comfy), weight_2=1.0),
            "Ensemble weights must be non-negative")
    refused(comfy, lambda: run_node(comfy.node("CaGLoadClassifier"), source=TINY_CLASSIFIER, architecture="",
                                    device="cuda:7"), "Device 'cuda:7' is not available")


# --------------------------------------------------------------------------------------------
# IMAGE inputs: shapes, sizes, dtypes, devices, NaN


def _bad_images():
    with torch.inference_mode():
        return {
            "nan": (torch.full((1, 16, 16, 3), math.nan), "NaN or Inf values"),
            "one_nan_pixel": (torch.rand(2, 16, 16, 3).index_put_((torch.tensor([1]),), torch.tensor(math.nan)),
                              "768 NaN or Inf values out of 1536"),
            "inf": (torch.rand(1, 16, 16, 3) / 0, "NaN or Inf values"),
            "empty_batch": (torch.rand(0, 16, 16, 3), "is empty (shape (0, 16, 16, 3))"),
            "zero_height": (torch.rand(1, 0, 16, 3), "is empty"),
            "no_batch_dim": (torch.rand(16, 16, 3), "shape [batch, height, width, channels], got (16, 16, 3)"),
            "two_channels": (torch.rand(1, 16, 16, 2), "got 2 channels"),
            "uint8": ((torch.rand(1, 16, 16, 3) * 255).to(torch.uint8), "dtype torch.uint8"),
            "meta": (torch.empty(1, 16, 16, 3, device="meta"), "'meta' tensor"),
            "not_a_tensor": ([[0.5]], "got list"),
        }


@pytest.mark.parametrize("case", list(_bad_images()))
def test_bad_images_are_refused_by_optimize(comfy, case):
    """NaN/Inf pixels from an upstream node are refused (the documented rule: never clamped into a
    plausible image), as are empty, integer, meta and wrongly shaped tensors."""
    image, words = _bad_images()[case]
    refused(comfy, lambda: optimize(comfy, image, load_classifier(comfy)), words)
    assert comfy.progress.updates == []


@pytest.mark.parametrize("case", [c for c in _bad_images() if c != "two_channels"])  # resize keeps any channels
def test_bad_images_are_refused_by_upsample(comfy, case):
    image, words = _bad_images()[case]
    refused(comfy, lambda: run_node(comfy.node("CaGUpsample"), image=image, **UPSAMPLE), words)


def test_too_large_input_image_is_refused_before_work(comfy):
    """A photo over 2048 px per side would exhaust memory in the optimizer: refused up front."""
    with torch.inference_mode():
        image = torch.zeros(1, 2049, 8, 3)
    refused(comfy, lambda: optimize(comfy, image, load_classifier(comfy)), "The input IMAGE", "8x2049")


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1, 1, 1, 3), torch.float32), ((1, 17, 31, 1), torch.float32), ((2, 9, 13, 4), torch.float16),
     ((1, 16, 16, 3), torch.float64), ((1, 16, 16, 3), torch.bfloat16)],
    ids=["1x1", "odd-gray", "odd-rgba-fp16", "fp64", "bf16"],
)
def test_usable_odd_images_work_with_the_mae(comfy, shape, dtype):
    """No size has to be a multiple of anything: the MAE and the classifier resize their own
    inputs (the MAE to its img_size, a multiple of its patch), so 1x1 and odd sizes run; any float
    dtype is converted to float32; grayscale and RGBA become RGB. Values outside 0..1 are clamped."""
    with torch.inference_mode():
        image = (torch.rand(shape) * 1.4 - 0.2).to(dtype)
    images, _ = optimize(comfy, image, load_classifier(comfy), mae=load_mae(comfy))
    assert images.shape == (shape[0], shape[1], shape[2], 3) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and 0 <= images.min() and images.max() <= 1


def test_classifiers_on_different_devices_are_named(comfy):
    """An ensemble whose members sit on different devices is refused naming both devices."""
    cpu = load_classifier(comfy)
    with torch.inference_mode(False):
        elsewhere = copy.deepcopy(cpu).to("meta")
    (ensemble,) = run_node(comfy.node("CaGCombineClassifiers"), classifier_1=cpu, weight_1=1.0,
                           classifier_2=elsewhere, weight_2=1.0)
    refused(comfy, lambda: optimize(comfy, comfy_image(1, 16, 16), ensemble), "is on meta", "on cpu")


def test_the_mae_follows_the_classifier_and_loaders_build_float32_models(comfy, monkeypatch):
    """An MAE on another device than the classifier is moved to the classifier's device (in
    place, so the cached MAE follows); both loaders build float32 models."""
    classifier, mae = load_classifier(comfy), load_mae(comfy)
    assert {p.dtype for p in [*classifier.parameters(), *mae.parameters()]} == {torch.float32}
    nodes = comfy.nodes.generation_nodes
    moves = []
    monkeypatch.setattr(nodes, "module_device", lambda module: torch.device("meta"))  # "the MAE is elsewhere"
    monkeypatch.setattr(nodes, "move_module", lambda module, device: moves.append(device) or module)
    images, _ = optimize(comfy, comfy_image(1, 16, 16), classifier, mae=mae)
    assert moves == [torch.device("cpu")] and images.shape == (1, 16, 16, 3)


# --------------------------------------------------------------------------------------------
# Faults during a run


def test_nan_weights_stop_the_run_with_a_message(comfy, model_file):
    """A checkpoint whose weights hold NaN (a corrupt file that still parses) makes the loss NaN:
    the run stops at step 1 with the reason, and no image comes out."""
    state = tiny_timm_model(1000).state_dict()
    state["conv_stem.weight"][0, 0, 0, 0] = math.nan
    path = model_file("classifiers", "nan_weights.safetensors")
    save_file(state, path, metadata={"cag_arch": TINY_ARCH})
    classifier = load_classifier(comfy, "nan_weights.safetensors")
    with pytest.raises(errors(comfy).NonFiniteLossError) as info:
        optimize(comfy, comfy_image(1, 16, 16), classifier, steps=5)
    assert_one_sentence(str(info.value), "The loss became nan at step 1 of 5", "no image is returned")
    assert len(comfy.progress.updates) == 0


def test_non_finite_output_is_never_returned(comfy, monkeypatch):
    """Whatever happens inside the engine, the node does not hand on NaN/Inf images."""
    result_type = sys.modules[f"{PACK_NAME}.cag_core.optimize"].OptimizeResult
    monkeypatch.setattr(comfy.nodes.generation_nodes, "optimize",
                        lambda images, *a, **k: result_type(images * math.nan, [1.0]))
    with pytest.raises(errors(comfy).NonFiniteLossError) as info:
        optimize(comfy, comfy_image(1, 8, 8), load_classifier(comfy))
    assert_one_sentence(str(info.value), "NaN or Inf")


def test_cancel_with_the_mae_stops_within_one_step_and_the_next_run_matches_a_fresh_one(comfy):
    """Cancel (the progress bar raising) at step 1 of 500 stops there; the next run with the same
    cached models gives exactly what an uninterrupted run gives."""
    classifier, mae = load_classifier(comfy), load_mae(comfy)
    image = comfy_image(1, 16, 16)
    expected, _ = optimize(comfy, image, classifier, mae=mae, steps=3, bn_weight=0.01)
    comfy.progress.reset()
    comfy.progress.interrupt_after = 1
    with pytest.raises(InterruptProcessingException):
        optimize(comfy, image, classifier, mae=mae, steps=500, bn_weight=0.01)
    assert len(comfy.progress.updates) == 1
    comfy.progress.reset()
    again, _ = optimize(comfy, image, load_classifier(comfy), mae=load_mae(comfy), steps=3, bn_weight=0.01)
    assert torch.equal(again, expected) and len(comfy.progress.updates) == 3


def test_out_of_memory_is_reported_and_the_memory_released(comfy, monkeypatch):
    """A CUDA OOM becomes one sentence with the batch to try; the failed step's tensors are freed
    while the error is still being handled (their frames are cleared), then the cache is emptied."""
    alive: list[weakref.ref] = []
    emptied: list[bool] = []

    def step_that_runs_out(images, *args, **kwargs):
        activations = torch.zeros(256, 1024)  # stands in for the step's device memory
        alive.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    classifier = load_classifier(comfy)
    monkeypatch.setattr(comfy.nodes.generation_nodes, "optimize", step_that_runs_out)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    with pytest.raises(errors(comfy).OutOfMemory) as info:
        optimize(comfy, comfy_image(6, 16, 16), classifier)
    assert_one_sentence(str(info.value), "Out of memory on cpu generating batch 6 at 16x16: try batch 3")
    assert alive and alive[0]() is None, "the failed step's tensors are still referenced"
    assert emptied == [True]
    monkeypatch.undo()
    images, _ = optimize(comfy, comfy_image(1, 16, 16), load_classifier(comfy))  # the next run works
    assert images.shape == (1, 16, 16, 3)


# --------------------------------------------------------------------------------------------
# Load: many runs in one process


def _rss_mb() -> float:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _autograd_tensors() -> int:
    """Live tensors that hold an autograd graph or want gradients (a leaked optimization)."""
    with warnings.catch_warnings():  # isinstance() on some deprecated torch objects warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects()
                   if isinstance(o, torch.Tensor) and not isinstance(o, torch.nn.Parameter)
                   and (o.grad_fn is not None or o.requires_grad))


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc (Linux)")
def test_many_queued_runs_complete_reuse_models_and_keep_memory_flat(comfy, monkeypatch):
    """30 prompts' worth of loader + noise + optimize (+ upsample) calls in one process: every run
    completes, each model file is read once, no autograd graph or parameter gradient survives a
    run, and RSS stays flat after warm-up."""
    module_c, module_m = comfy.nodes.classifier_nodes, comfy.nodes.mae_nodes
    loads = {"classifier": 0, "mae": 0}

    def counting(fn, key):
        def wrapper(*args, **kwargs):
            loads[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(module_c, "classifier_from_file", counting(module_c.classifier_from_file, "classifier"))
    monkeypatch.setattr(module_m, "load_mae", counting(module_m.load_mae, "mae"))

    def prompt(seed: int):
        classifier, mae = load_classifier(comfy), load_mae(comfy)
        (noise,) = run_node(comfy.node("CaGInitNoise"), width=16, height=16, batch_size=2, noise="gray", seed=seed)
        images, report = optimize(comfy, noise, classifier, mae=mae, seed=seed, crops=2, bn_weight=0.01,
                                  target_text="tabby:0.7 | tiger cat:0.3")
        if seed % 3 == 0:
            images, _ = run_node(comfy.node("CaGUpsample"), image=images, **UPSAMPLE)
        assert torch.isfinite(images).all() and "2 steps" in report
        return classifier, mae, images

    first_classifier, first_mae, _ = prompt(0)
    for seed in range(1, 6):  # warm-up: allocator pools, lazily built kernels
        prompt(seed)
    gc.collect()
    graphs_before, rss_before = _autograd_tensors(), _rss_mb()
    outputs = [prompt(seed)[2].shape for seed in range(6, 36)]
    gc.collect()
    rss_growth = _rss_mb() - rss_before
    assert len(outputs) == 30 and outputs.count((2, 32, 32, 3)) == 10 and outputs.count((2, 16, 16, 3)) == 20
    assert loads == {"classifier": 1, "mae": 1}
    assert load_classifier(comfy) is first_classifier and load_mae(comfy) is first_mae
    assert all(p.grad is None and not p.requires_grad for p in first_classifier.parameters())
    assert all(p.grad is None and not p.requires_grad for p in first_mae.parameters())
    assert _autograd_tensors() <= graphs_before
    print(f"30 runs: RSS {rss_before:.0f} MB -> +{rss_growth:.1f} MB; loads {loads}")
    assert rss_growth < 24, f"RSS grew by {rss_growth:.1f} MB over 30 runs"


# --------------------------------------------------------------------------------------------
# Registry hygiene: the pack as ComfyUI imports it


def test_loading_the_pack_and_listing_its_inputs_opens_no_connection(comfy, monkeypatch):
    """Importing the pack and building every node's INPUT_TYPES (what ComfyUI does at startup)
    touches no network; the engine's own imports are checked in test_hygiene."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access while loading the pack")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    name = PACK_NAME + "_netcheck"
    before = set(sys.modules)
    try:
        pack = load_pack(name)
        pack.nodes.register_model_folders()
        for cls in pack.NODE_CLASS_MAPPINGS.values():
            assert cls.INPUT_TYPES()["required"]
    finally:
        for module in set(sys.modules) - before:
            del sys.modules[module]
    assert set(pack.NODE_CLASS_MAPPINGS) == set(comfy.pack.NODE_CLASS_MAPPINGS)  # every node, as in the normal load


def test_readme_lists_what_is_refused():
    """The README's table of refused input exists and names every rule tested here."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## What is refused, and why", 1)[1].split("\n## ", 1)[0]
    for words in ("weights_only=True", "symlink", "missing and unexpected keys", "corrupt or truncated",
                  "Did you mean", "out of range", "NaN or Inf", "multiple", "batch size to try", "Cancel",
                  "dtype", "devices"):
        assert re.search(re.escape(words), section, re.I), f"README section lacks {words!r}"
