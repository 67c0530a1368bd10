"""The example workflows: up to date with the nodes, valid UI/API JSON, and runnable end to end.

End-to-end runs execute every API twin in topological order with ComfyUI stubbed (see conftest),
on tiny models instead of the real ones: `conftest.TINY_SUBSTITUTIONS` lists every substituted
input (classifier -> tiny timm test-net file, MAE -> tiny MAE, CLIP -> tiny registered
architecture + local checkpoint, 16 px first stage, 2 steps per stage).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_CLASSIFIER, core_load_image, core_pad_for_outpaint, run_node, substitute_tiny

WORKFLOW_DIR = REPO_ROOT / "workflows"
UI_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
API_FILES = sorted((WORKFLOW_DIR / "api").glob("*.json"))
# Combos listing files on disk: a workflow names a file the user downloads, so it need not exist.
MODEL_FILE_WIDGETS = {("CaGLoadClassifier", "source"), ("CaGLoadMAE", "mae_file"), ("CaGTextClassifier", "checkpoint")}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
PHOTO_DIR = WORKFLOW_DIR / "inputs"


def _load_builder():
    spec = importlib.util.spec_from_file_location("cag_build_workflows", WORKFLOW_DIR / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


@pytest.fixture
def classes(comfy):
    """Node classes by type: the pack's plus the core ComfyUI nodes the workflows use."""
    return {**comfy.pack.NODE_CLASS_MAPPINGS, **builder.CORE_NODES}


def _specs(classes, node_type) -> dict:
    return {s.name: s for s in builder.input_specs(classes[node_type])}


def _check_widget_value(node_type: str, spec, value) -> None:
    where = f"{node_type}.{spec.name}={value!r}"
    if spec.type == "COMBO":
        if (node_type, spec.name) in MODEL_FILE_WIDGETS and str(value).endswith(WEIGHT_SUFFIXES):
            return
        if (node_type, spec.name) == ("LoadImage", "image"):  # the pack's own photos, copied in at load
            assert str(value).startswith("cag_example_") and (PHOTO_DIR / value[len("cag_example_"):]).is_file(), where
            return
        assert value in spec.choices, f"{where} is not one of the choices"
    elif spec.type in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert spec.options.get("min", -float("inf")) <= value <= spec.options.get("max", float("inf")), where
        if spec.type == "INT":
            assert isinstance(value, int), where
    elif spec.type == "STRING":
        assert isinstance(value, str), where
    elif spec.type == "BOOLEAN":
        assert isinstance(value, bool), where


def test_workflow_files_exist():
    """Seven example workflows, each with an API twin of the same name."""
    assert len(UI_FILES) == 7
    assert [p.name for p in UI_FILES] == [p.name for p in API_FILES]


def test_committed_workflows_match_the_builder(classes):
    """The committed JSON is what build_workflows.py makes from the current node definitions."""
    for rel, text in builder.render_all(classes).items():
        assert (WORKFLOW_DIR / rel).read_text() == text, f"{rel} is stale: run python workflows/build_workflows.py"


def test_stage_chains_use_the_command_line_recipe():
    """The class and text workflows' CaG Optimize stages run the command line's default recipe: its
    stage sides, steps, view blur, view noise, spectrum, BN-prior schedule and contrast; the photo
    workflows keep Lucid's 1/f, the prior in every step and a free contrast, as their pictures were made."""
    from cag_core.progressive import ProgressiveConfig

    default = ProgressiveConfig()
    assert builder.DEFAULT_STEPS == default.steps and builder.DEFAULT_SIDES == default.sizes
    for name in ("cag_quick_start", "cag_class_with_mae", "cag_class_without_mae", "cag_text_to_image"):
        prompt = json.loads((WORKFLOW_DIR / "api" / f"{name}.json").read_text())
        stages = [n["inputs"] for n in prompt.values() if n["class_type"] == "CaGOptimize"]
        assert tuple(s["steps"] for s in stages) == default.steps, name
        assert all(s["view_blur"] == default.stage.augment.blur for s in stages), name
        assert all(s["view_noise"] == default.stage.augment.noise for s in stages), name
        assert all(s["decay_power"] == default.stage.decay_power == 1.5 for s in stages), name
        assert all(s["bn_every"] == default.stage.bn_every == 2 for s in stages), name
        assert all(s["image_std"] == default.stage.image_std == 3.6 for s in stages), name
        noise = next(n["inputs"] for n in prompt.values() if n["class_type"] == "CaGInitNoise")
        assert noise["width"] == noise["height"] == default.sizes[0], name
    for name in ("cag_img2img", "cag_inpaint", "cag_outpaint"):
        prompt = json.loads((WORKFLOW_DIR / "api" / f"{name}.json").read_text())
        stages = [n["inputs"] for n in prompt.values() if n["class_type"] == "CaGOptimize"]
        assert stages and all(s["decay_power"] == 1.0 and s["bn_every"] == 1 and s["image_std"] == 0 for s in stages), name


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_is_valid(path: Path, classes):
    """UI format 0.4: known node types, links whose types match both ends, valid widget values."""
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    for node in nodes.values():
        assert node["type"] in classes, f"unknown node type {node['type']}"
        for key in ("pos", "size", "inputs", "outputs", "widgets_values", "mode", "order"):
            assert key in node, f"node {node['id']} lacks {key}"
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        source, target = nodes[src], nodes[dst]
        assert builder.output_types(classes[source["type"]])[src_slot] == kind
        assert link_id in source["outputs"][src_slot]["links"]
        target_input = target["inputs"][dst_slot]
        assert target_input["link"] == link_id and target_input["type"] == kind
        assert _specs(classes, target["type"])[target_input["name"]].type == kind
    for node in nodes.values():
        specs = builder.input_specs(classes[node["type"]])
        widgets = [s for s in specs if s.is_widget]
        expected = sum(2 if s.has_seed_control else 1 for s in widgets)
        values = list(node["widgets_values"])
        assert len(values) == expected, f"{node['type']} has {len(values)} widget values, expects {expected}"
        for spec in widgets:
            _check_widget_value(node["type"], spec, values.pop(0))
            if spec.has_seed_control:
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
        linked = {i["name"] for i in node["inputs"] if i["link"] is not None}
        required = {s.name for s in specs if not s.is_widget and not s.optional}
        assert required <= linked, f"{node['type']} #{node['id']} leaves {required - linked} unconnected"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_valid(path: Path, classes):
    """API format: known class_types, every required input given, links typed like their sockets."""
    prompt = json.loads(path.read_text())
    assert any(getattr(classes[n["class_type"]], "OUTPUT_NODE", False) for n in prompt.values())
    for node_id, node in prompt.items():
        specs = _specs(classes, node["class_type"])
        assert set(node["inputs"]) <= set(specs), f"node {node_id} has unknown inputs"
        for name, spec in specs.items():
            value = node["inputs"].get(name)
            if value is None:
                assert spec.optional, f"node {node_id} ({node['class_type']}) misses required input {name}"
            elif isinstance(value, list):
                source = prompt[value[0]]
                assert builder.output_types(classes[source["class_type"]])[value[1]] == spec.type
            else:
                _check_widget_value(node["class_type"], spec, value)


# --------------------------------------------------------------------------------------------
# End to end


CORE_STAND_INS = {"LoadImage": core_load_image, "ImagePadForOutpaint": core_pad_for_outpaint}


class SavedImages:
    """Executes SaveImage / PreviewImage: keeps what they were given."""

    def __init__(self):
        self.images: list[torch.Tensor] = []

    def __call__(self, images, filename_prefix="ComfyUI"):
        self.images.append(images)
        return ()


def execute(prompt: dict, classes: dict, saved: SavedImages) -> dict:
    """Run an API prompt like ComfyUI: validate (linked inputs as None), then execute in order."""
    graph = builder.Graph("", [
        builder.Node(int(i), n["class_type"], links={k: (int(v[0]), v[1]) for k, v in n["inputs"].items() if isinstance(v, list)})
        for i, n in prompt.items()
    ])
    outputs: dict[str, tuple] = {}
    for graph_node in builder.topological_order(graph):
        node_id = str(graph_node.id)
        node = prompt[node_id]
        cls = classes[node["class_type"]]
        if node["class_type"] in builder.CORE_NODES:
            kwargs = {k: outputs[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
            if node["class_type"] in CORE_STAND_INS:
                with torch.inference_mode():
                    outputs[node_id] = CORE_STAND_INS[node["class_type"]](**kwargs)
            else:
                saved(**kwargs)
            continue
        validate = getattr(cls, "VALIDATE_INPUTS", None)
        if validate is not None:
            names = validate.__code__.co_varnames[1:validate.__code__.co_argcount]
            known = {k: (None if isinstance(v, list) else v) for k, v in node["inputs"].items() if k in names}
            assert validate(**known) is True, f"node {node_id} failed validation: {validate(**known)}"
        kwargs = {k: outputs[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        if "unique_id" in cls.INPUT_TYPES().get("hidden", {}):
            kwargs["unique_id"] = node_id
        result = run_node(cls(), **kwargs)
        # An output node may return {"ui": ..., "result": (...)}; the graph links to "result".
        outputs[node_id] = result["result"] if isinstance(result, dict) else result
    return outputs


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_runs_end_to_end(path: Path, classes, comfy):
    """Each API twin runs on tiny models and saves float32 images in [0, 1] at the first stage's side
    times the upsampling (8x in the four-stage workflows)."""
    prompt = substitute_tiny(json.loads(path.read_text()))
    saved = SavedImages()
    execute(prompt, classes, saved)
    assert len(saved.images) == 1
    images = saved.images[0]
    noise = [n["inputs"] for n in prompt.values() if n["class_type"] == "CaGInitNoise"]
    if noise:
        scale = math.prod(n["inputs"]["scale_by"] for n in prompt.values() if n["class_type"] == "CaGUpsample")
        side = round(noise[0]["width"] * scale)
        assert scale >= 4 and images.shape == (noise[0]["batch_size"], side, side, 3)
    else:  # from a photo: its own size, plus the outpainting border
        (photo,) = [n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage"]
        rgb, _ = core_load_image(photo)
        pads = [n["inputs"] for n in prompt.values() if n["class_type"] == "ImagePadForOutpaint"]
        extra = (pads[0]["top"] + pads[0]["bottom"], pads[0]["left"] + pads[0]["right"]) if pads else (0, 0)
        assert images.shape == (1, rgb.shape[1] + extra[0], rgb.shape[2] + extra[1], 3)
    assert images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0.0 <= images.min() and images.max() <= 1.0
    steps = [n["inputs"]["steps"] for n in prompt.values() if n["class_type"] == "CaGOptimize"]
    assert len(comfy.progress.updates) == sum(steps)  # every step reported (and interruptible)


def test_quick_start_workflow_equals_the_command_line_engine(classes, comfy):
    """The quick start's nodes (one seed for the noise and every stage) give the images that
    `cag_core.progressive.generate(seed=...)` -- what `python -m cag_core generate` runs -- gives
    for the same classifier, class, seed and recipe, bit for bit."""
    from cag_core.progressive import ProgressiveConfig

    workflow, engine = _workflow_and_engine("cag_quick_start", ProgressiveConfig(sizes=(16, 32, 64, 128), steps=(2,)),
                                            classes, comfy)
    assert torch.equal(workflow, engine)


def _workflow_and_engine(name, config, classes, comfy):
    """(images the API workflow `name` saves on tiny models, images generate() makes with `config` for
    the same tiny classifier, class, batch and seed), both [B, H, W, 3]."""
    from cag_core.progressive import generate
    from cag_core.timm_classifier import classifier_from_file

    prompt = substitute_tiny(json.loads((WORKFLOW_DIR / "api" / f"{name}.json").read_text()))
    saved = SavedImages()
    execute(prompt, classes, saved)
    noise = next(n["inputs"] for n in prompt.values() if n["class_type"] == "CaGInitNoise")
    target = next(n["inputs"]["class_name"] for n in prompt.values() if n["class_type"] == "CaGClassPicker")
    path = comfy.folder_paths.get_full_path("cag_classifiers", TINY_CLASSIFIER)
    engine = generate(classifier_from_file(path), target, batch=noise["batch_size"], seed=noise["seed"], config=config)
    return saved.images[0], engine.images.movedim(1, -1)


@pytest.mark.parametrize("name", ["cag_inpaint", "cag_outpaint"])
def test_photo_workflows_keep_the_unmasked_photo(name, classes, comfy):
    """Inpaint and outpaint on tiny models: where the mask is 0 the saved image is the photo, within
    1/255 (here: exactly)."""
    prompt = substitute_tiny(json.loads((WORKFLOW_DIR / "api" / f"{name}.json").read_text()))
    saved = SavedImages()
    outputs = execute(prompt, classes, saved)
    by_type = {n["class_type"]: i for i, n in prompt.items()}
    photo, mask = outputs[by_type.get("ImagePadForOutpaint", by_type["LoadImage"])]  # the start and its mask
    keep = (mask[0] == 0).unsqueeze(-1).expand_as(photo[0])
    result = saved.images[0][0]
    assert keep.any() and not keep.all()
    assert (result[keep] - photo[0][keep]).abs().max() <= 1 / 255
    assert (result[~keep] - photo[0][~keep]).abs().max() > 0.01  # the masked part did change
