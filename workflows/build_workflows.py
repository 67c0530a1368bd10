"""Build the example workflows, UI and API format, from one graph description per workflow.

    python workflows/build_workflows.py            # rewrite workflows/*.json and workflows/api/*.json
    python workflows/build_workflows.py --check    # exit 1 if a committed file is out of date

Widget order, defaults and socket types come from the node classes' INPUT_TYPES / RETURN_TYPES, so
the JSON cannot drift from the nodes (tests/test_workflows.py also rebuilds and compares).
ComfyUI lists <pack>/workflows/*.json in its template browser; the API twins live in
workflows/api/ so the browser does not list them. Runs without ComfyUI: model-file lists are
empty here, which only matters for defaults, and every file widget below names its file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# Widgets that get ComfyUI's extra "control_after_generate" widget value right after them.
SEED_NAMES = ("seed", "noise_seed")
NODE_WIDTH = 340


# --------------------------------------------------------------------------------------------
# Core ComfyUI nodes used by the workflows (their input specs as in ComfyUI's nodes.py).


class SaveImage:
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}


class PreviewImage:
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}


class LoadImage:
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ([], {"image_upload": True})}}


class ImagePadForOutpaint:
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        side = {"default": 0, "min": 0, "max": 16384, "step": 8}
        return {"required": {"image": ("IMAGE",), "left": ("INT", side), "top": ("INT", side), "right": ("INT", side),
                             "bottom": ("INT", side),
                             "feathering": ("INT", {"default": 40, "min": 0, "max": 16384, "step": 1})}}


CORE_NODES = {"SaveImage": SaveImage, "PreviewImage": PreviewImage, "LoadImage": LoadImage,
              "ImagePadForOutpaint": ImagePadForOutpaint}
# The example photos (workflows/inputs/) as the pack copies them into ComfyUI's input folder.
EXAMPLE_PHOTO = "cag_example_{}"


# --------------------------------------------------------------------------------------------
# Graph description


@dataclass
class Node:
    id: int
    type: str
    values: dict = field(default_factory=dict)  # widget name -> value (others: the node's default)
    links: dict = field(default_factory=dict)  # input name -> (from node id, output slot)
    title: str | None = None


@dataclass
class Graph:
    description: str
    nodes: list[Node]


# Sides and steps per stage, 32 -> 64 -> 128 -> 256: the command line's default, cag_core's
# ProgressiveConfig().sizes and .steps (tests/test_workflows.py checks that they agree).
DEFAULT_SIDES = (32, 64, 128, 256)
DEFAULT_STEPS = (50, 50, 100, 100)


def _stage_chain(first_id: int, classifier: int, target: int | None, mae: int | None, prefix: str,
                 steps: tuple[int, ...] = DEFAULT_STEPS, batch: int = 1, seed: int = 0,
                 target_class: str = "207: golden retriever", sides: tuple[int, ...] = DEFAULT_SIDES) -> list[Node]:
    """Noise 32 -> optimize -> x2 -> optimize -> ... -> optimize at 256 -> SaveImage (ids from first_id);
    `sides` (each twice the one before) and `steps` give other schedules.

    target: the class picker feeding every stage's target_text; each stage's own target_class is
    set to the same class, so the graph still makes that class if the picker is disconnected.
    """
    if any(b != 2 * a for a, b in zip(sides, sides[1:])):
        raise ValueError(f"Each stage side must be twice the one before, got {sides}.")
    i = first_id
    optimize_links = {"classifier": (classifier, 0)}
    if mae is not None:
        optimize_links["mae"] = (mae, 0)
    if target is not None:
        optimize_links["target_text"] = (target, 0)
    nodes = [Node(i, "CaGInitNoise", {"width": sides[0], "height": sides[0], "batch_size": batch, "noise": "gray",
                                      "seed": seed}, title=f"Start noise {sides[0]}x{sides[0]}")]
    image = i
    for stage, (side, stage_steps) in enumerate(zip(sides, steps, strict=True)):
        if stage:
            nodes.append(Node(image + 1, "CaGUpsample", {"scale_by": 2.0, "method": "bicubic"}, {"image": (image, 0)},
                              title=f"Upsample to {side}"))
            image += 1
        nodes.append(Node(
            image + 1, "CaGOptimize",
            # One seed for the noise and every stage, as `python -m cag_core generate --seed` uses it: the
            # stages still draw different views (each stage's streams are keyed by its image size).
            {"target_class": target_class, "steps": stage_steps, "lr": 0.05, "crops": 2, "parameterization": "fourier",
             "seed": seed},
            {"image": (image, 0), **optimize_links}, title=f"Optimize {side}x{side}",
        ))
        image += 1
    nodes.append(Node(image + 1, "SaveImage", {"filename_prefix": prefix}, {"images": (image, 0)}, title="Save"))
    return nodes


# The photo workflows' CaG Optimize stages: crops anywhere in the frame, since the region to change can
# be anywhere (the centred default looks at the middle more), sharp, clean views, Lucid's 1/f
# spectrum, the BN-statistics prior in every step and a free contrast; the README's pictures were made so.
PHOTO_VIEWS = {"crop_center_std": 0.0, "view_blur": 0.0, "view_noise": 0.0, "decay_power": 1.0, "bn_every": 1,
               "image_std": 0.0}

GRAPHS = {
    "cag_quick_start": Graph(
        "Quick start: the embedded EfficientNet-Lite0 (no download), no MAE, 32 -> 64 -> 128 -> 256.",
        [
            Node(1, "CaGLoadClassifier", {"source": "efficientnet-lite0"}, title="Classifier"),
            Node(2, "CaGClassPicker", {"class_name": "207: golden retriever"}, title="Class"),
            *_stage_chain(3, classifier=1, target=2, mae=None, prefix="cag_quick_start"),
        ],
    ),
    "cag_class_with_mae": Graph(
        "Class-conditional generation as in the paper: every step goes through the MAE "
        "(put mae_visualize_vit_large.pth from facebookresearch/mae in models/mae).",
        [
            Node(1, "CaGLoadClassifier", {"source": "efficientnet-lite0"}, title="Classifier"),
            Node(2, "CaGLoadMAE", {"mae_file": "mae_visualize_vit_large.pth", "size": "auto"}, title="MAE"),
            Node(3, "CaGClassPicker", {"class_name": "1: goldfish"}, title="Class"),
            *_stage_chain(4, classifier=1, target=3, mae=2, prefix="cag_with_mae", batch=4,
                          target_class="1: goldfish"),
        ],
    ),
    "cag_class_without_mae": Graph(
        "The same generation without the MAE, for comparison (same classifier, class, seeds and steps).",
        [
            Node(1, "CaGLoadClassifier", {"source": "efficientnet-lite0"}, title="Classifier"),
            Node(3, "CaGClassPicker", {"class_name": "1: goldfish"}, title="Class"),
            *_stage_chain(4, classifier=1, target=3, mae=None, prefix="cag_without_mae", batch=4,
                          target_class="1: goldfish"),
        ],
    ),
    "cag_inpaint": Graph(
        "Inpaint: only the transparent part of the photo (Load Image's mask; paint your own in the mask "
        "editor) becomes the class; CaG Classify shows what an independent network (EfficientNet-Lite2) sees.",
        [
            Node(1, "CaGLoadClassifier", {"source": "efficientnet-lite0"}, title="Classifier (generates)"),
            Node(2, "LoadImage", {"image": EXAMPLE_PHOTO.format("inpaint_coffee.png")}, title="Photo with its mask"),
            Node(3, "CaGOptimize", {"target_class": "928: ice cream", "steps": 150, "feather": 6, "seed": 0,
                                    **PHOTO_VIEWS},
                 {"image": (2, 0), "mask": (2, 1), "classifier": (1, 0)}, title="Optimize the masked region"),
            Node(4, "SaveImage", {"filename_prefix": "cag_inpaint"}, {"images": (3, 0)}, title="Save"),
            Node(5, "CaGLoadClassifier", {"source": "efficientnet-lite2"}, title="Judge (did not generate)"),
            Node(6, "CaGClassify", {"top_k": 3, "target_text": "928: ice cream"}, {"image": (3, 0), "classifier": (5, 0)},
                 title="What the judge sees"),
        ],
    ),
    "cag_outpaint": Graph(
        "Outpaint: Pad Image for Outpainting widens the photo; stage 1 fills the new sides at half size "
        "(starting from an extension of the sky), stage 2 refines them at full size while the photo itself "
        "stays exact.",
        [
            Node(1, "CaGLoadClassifier", {"source": "efficientnet-lite0"}, title="Classifier"),
            Node(2, "LoadImage", {"image": EXAMPLE_PHOTO.format("outpaint_rocket.jpg")}, title="Photo"),
            Node(3, "ImagePadForOutpaint", {"left": 64, "top": 0, "right": 64, "bottom": 0, "feathering": 24},
                 {"image": (2, 0)}, title="Pad 64 px left and right"),
            Node(4, "CaGUpsample", {"scale_by": 0.5, "method": "bicubic"}, {"image": (3, 0), "mask": (3, 1)},
                 title="Half size for stage 1"),
            # fill_masked: the gray border starts as an extension of the sky; TV 5 keeps it smooth
            # (tried on this photo: without them the border became bright, busy noise).
            Node(5, "CaGOptimize", {"target_class": "540: drilling platform", "steps": 100, "seed": 0,
                                    "fill_masked": True, "tv_weight": 5.0, **PHOTO_VIEWS},
                 {"image": (4, 0), "mask": (4, 1), "classifier": (1, 0)}, title="Optimize, half size"),
            Node(6, "CaGUpsample", {"scale_by": 2.0, "method": "bicubic"},
                 {"image": (5, 0), "mask": (3, 1), "original": (3, 0)}, title="Full size, the photo pasted back"),
            Node(7, "CaGOptimize", {"target_class": "540: drilling platform", "steps": 100, "seed": 0,
                                    "tv_weight": 5.0, **PHOTO_VIEWS},
                 {"image": (6, 0), "mask": (6, 1), "classifier": (1, 0)}, title="Optimize, full size"),
            Node(8, "SaveImage", {"filename_prefix": "cag_outpaint"}, {"images": (7, 0)}, title="Save"),
        ],
    ),
    "cag_img2img": Graph(
        "Img2img: a photo pushed toward another class; anchor_weight keeps its layout and colours. "
        "CaG Classify shows what an independent network (EfficientNet-Lite2) sees before and after.",
        [
            Node(1, "CaGLoadClassifier", {"source": "efficientnet-lite0"}, title="Classifier (generates)"),
            Node(2, "LoadImage", {"image": EXAMPLE_PHOTO.format("img2img_chelsea.jpg")}, title="Photo"),
            Node(3, "CaGOptimize", {"target_class": "277: red fox", "steps": 150, "anchor_weight": 100.0, "seed": 0,
                                    **PHOTO_VIEWS},
                 {"image": (2, 0), "classifier": (1, 0)}, title="Optimize toward the class"),
            Node(4, "SaveImage", {"filename_prefix": "cag_img2img"}, {"images": (3, 0)}, title="Save"),
            Node(5, "CaGLoadClassifier", {"source": "efficientnet-lite2"}, title="Judge (did not generate)"),
            Node(6, "CaGClassify", {"top_k": 3, "target_text": "277: red fox"}, {"image": (2, 0), "classifier": (5, 0)},
                 title="Judge: the photo"),
            Node(7, "CaGClassify", {"top_k": 3, "target_text": "277: red fox"}, {"image": (3, 0), "classifier": (5, 0)},
                 title="Judge: the result"),
        ],
    ),
    "cag_text_to_image": Graph(
        "Text-to-image: CLIP ViT-B-32 (LAION-2B) as a classifier over your prompts "
        "(open_clip downloads the weights on first use).",
        [
            Node(1, "CaGTextClassifier", {
                "clip_model": "ViT-B-32 / laion2b_s34b_b79k", "checkpoint": "none",
                "prompts": "a photo of a red fox in the snow", "negatives": "blurry | text",
            }, title="Text classifier"),
            *_stage_chain(2, classifier=1, target=None, mae=None, prefix="cag_text_to_image"),
        ],
    ),
}


# --------------------------------------------------------------------------------------------
# Node specs from INPUT_TYPES


@dataclass
class InputSpec:
    name: str
    type: str  # "INT", "COMBO", "IMAGE", ...
    options: dict
    choices: list | None
    optional: bool

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput")

    @property
    def has_seed_control(self) -> bool:
        return self.type == "INT" and (self.options.get("control_after_generate") or self.name in SEED_NAMES)


def input_specs(node_class) -> list[InputSpec]:
    spec = node_class.INPUT_TYPES()
    result = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
            if isinstance(kind, (list, tuple)):
                result.append(InputSpec(name, "COMBO", options, list(kind), section == "optional"))
            else:
                result.append(InputSpec(name, kind, options, None, section == "optional"))
    return result


def output_types(node_class) -> list[str]:
    return list(node_class.RETURN_TYPES)


def output_names(node_class) -> list[str]:
    return list(getattr(node_class, "RETURN_NAMES", None) or node_class.RETURN_TYPES)


def widget_value(spec: InputSpec, node: Node):
    if spec.name in node.values:
        return node.values[spec.name]
    if "default" in spec.options:
        return spec.options["default"]
    if spec.choices:
        return spec.choices[0]
    raise ValueError(f"{node.type} #{node.id}: give a value for '{spec.name}' (no default).")


def _check_graph(graph: Graph, classes: dict) -> None:
    ids = [n.id for n in graph.nodes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate node ids in {ids}")
    by_id = {n.id: n for n in graph.nodes}
    for node in graph.nodes:
        names = {s.name for s in input_specs(classes[node.type])}
        unknown = (set(node.values) | set(node.links)) - names
        if unknown:
            raise ValueError(f"{node.type} #{node.id} has no inputs {sorted(unknown)}; it has {sorted(names)}")
        for name, (source, _slot) in node.links.items():
            if source not in by_id:
                raise ValueError(f"{node.type} #{node.id}.{name} links to missing node {source}")


def topological_order(graph: Graph) -> list[Node]:
    by_id = {n.id: n for n in graph.nodes}
    done: dict[int, None] = {}

    def visit(node: Node, path: tuple[int, ...]):
        if node.id in path:
            raise ValueError(f"cycle through node {node.id}")
        for source, _slot in node.links.values():
            visit(by_id[source], path + (node.id,))
        done.setdefault(node.id)

    for node in sorted(graph.nodes, key=lambda n: n.id):
        visit(node, ())
    return [by_id[i] for i in done]


# --------------------------------------------------------------------------------------------
# The two formats


def build_api(graph: Graph, classes: dict) -> dict:
    """API format: {id: {class_type, inputs: {name: value or [from_id, slot]}, _meta}}."""
    _check_graph(graph, classes)
    prompt = {}
    for node in sorted(graph.nodes, key=lambda n: n.id):
        inputs = {}
        for spec in input_specs(classes[node.type]):
            if spec.name in node.links:
                source, slot = node.links[spec.name]
                inputs[spec.name] = [str(source), slot]
            elif spec.is_widget:
                inputs[spec.name] = widget_value(spec, node)
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or node.type}}
    return prompt


def _depths(graph: Graph) -> dict[int, int]:
    depth: dict[int, int] = {}
    for node in topological_order(graph):
        depth[node.id] = max((depth[s] + 1 for s, _ in node.links.values()), default=0)
    return depth


def _node_height(specs: list[InputSpec], n_outputs: int, linked: set[str]) -> int:
    sockets = max(sum(1 for s in specs if not s.is_widget or s.name in linked), n_outputs)
    widgets = sum(1 for s in specs if s.is_widget and s.name not in linked)
    multiline = sum(1 for s in specs if s.is_widget and s.options.get("multiline") and s.name not in linked)
    return 40 + 22 * sockets + 26 * widgets + 60 * multiline


def build_ui(graph: Graph, classes: dict) -> dict:
    """UI format (LiteGraph, version 0.4), as the ComfyUI frontend saves it."""
    _check_graph(graph, classes)
    order = {n.id: i for i, n in enumerate(topological_order(graph))}
    depth = _depths(graph)
    links = []
    # (to node, input name) -> link id; (from node, slot) -> [link ids]
    link_into: dict[tuple[int, str], int] = {}
    links_out: dict[tuple[int, int], list[int]] = {}
    for node in sorted(graph.nodes, key=lambda n: n.id):
        for spec in input_specs(classes[node.type]):
            if spec.name in node.links:
                source, slot = node.links[spec.name]
                link_id = len(links) + 1
                out_type = output_types(classes[next(n.type for n in graph.nodes if n.id == source)])[slot]
                links.append([link_id, source, slot, node.id, None, out_type])  # to_slot filled below
                link_into[(node.id, spec.name)] = link_id
                links_out.setdefault((source, slot), []).append(link_id)

    ui_nodes = []
    column_y: dict[int, int] = {}
    for node in sorted(graph.nodes, key=lambda n: (depth[n.id], n.id)):
        cls = classes[node.type]
        specs = input_specs(cls)
        linked = set(node.links)
        inputs, widgets_values = [], []
        for spec in specs:
            if not spec.is_widget:
                entry = {"name": spec.name, "type": spec.type, "link": link_into.get((node.id, spec.name))}
                if spec.optional:
                    entry["shape"] = 7  # how the frontend marks optional sockets
                inputs.append(entry)
            elif spec.name in linked:
                inputs.append({"name": spec.name, "type": spec.type, "widget": {"name": spec.name},
                               "link": link_into[(node.id, spec.name)]})
            if spec.is_widget:
                widgets_values.append(widget_value(spec, node))
                if spec.has_seed_control:
                    widgets_values.append("fixed")  # reproducible examples: do not change the seed
        for slot, entry in enumerate(inputs):
            if entry["link"] is not None:
                links[entry["link"] - 1][4] = slot
        outputs = [
            {"name": name, "type": kind, "links": links_out.get((node.id, slot), []), "slot_index": slot}
            for slot, (name, kind) in enumerate(zip(output_names(cls), output_types(cls)))
        ]
        height = _node_height(specs, len(outputs), linked)
        x = 40 + depth[node.id] * (NODE_WIDTH + 60)
        y = column_y.get(depth[node.id], 40)
        column_y[depth[node.id]] = y + height + 50
        ui_node = {
            "id": node.id, "type": node.type, "pos": [x, y], "size": [NODE_WIDTH, height],
            "flags": {}, "order": order[node.id], "mode": 0,
            "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": node.type},
            "widgets_values": widgets_values,
        }
        if node.title:
            ui_node["title"] = node.title
        ui_nodes.append(ui_node)
    return {
        "last_node_id": max(n.id for n in graph.nodes),
        "last_link_id": len(links),
        "nodes": sorted(ui_nodes, key=lambda n: n["id"]),
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"info": {"description": graph.description}},
        "version": 0.4,
    }


def render_all(classes: dict) -> dict[str, str]:
    """Relative path -> JSON text of every workflow file."""
    files = {}
    for name, graph in GRAPHS.items():
        files[f"{name}.json"] = json.dumps(build_ui(graph, classes), indent=2) + "\n"
        files[f"api/{name}.json"] = json.dumps(build_api(graph, classes), indent=2) + "\n"
    return files


# --------------------------------------------------------------------------------------------
# Loading the node classes without ComfyUI


def _offline_folder_paths() -> ModuleType:
    """Just enough of ComfyUI's folder_paths for INPUT_TYPES: registered keys with no files."""
    fp = ModuleType("folder_paths")
    fp.models_dir = str(REPO_ROOT / "models")
    fp.folder_names_and_paths = {}
    fp.get_folder_paths = lambda key: list(fp.folder_names_and_paths[key][0])
    fp.get_filename_list = lambda key: []
    # The pack copies its example photos into the input folder at load: give it a throwaway one.
    import tempfile

    fp.get_input_directory = lambda: tempfile.mkdtemp(prefix="cag-build-inputs-")
    return fp


def load_node_classes() -> dict:
    """The pack's node classes plus CORE_NODES, importing the pack as ComfyUI does."""
    sys.modules.setdefault("folder_paths", _offline_folder_paths())
    spec = importlib.util.spec_from_file_location("comfyui_cag", REPO_ROOT / "__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_cag"] = pack
    spec.loader.exec_module(pack)
    if not pack.NODE_CLASS_MAPPINGS:
        raise SystemExit("The pack's nodes did not load (see the message above).")
    return {**pack.NODE_CLASS_MAPPINGS, **CORE_NODES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in render_all(load_node_classes()).items():
        path = HERE / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "out of date" if args.check else "written"
    print(f"{len(stale)} file(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
