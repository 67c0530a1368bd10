"""Shared test setup: no network, ComfyUI stubbed, the pack loaded the way ComfyUI loads it.

ComfyUI imports a pack with `spec_from_file_location(<dir>, <dir>/__init__.py)`, so the nodes'
relative imports (`from ..cag_core ...`) resolve inside the pack. `load_pack()` does the same
under the name `comfyui_cag`. Node tests therefore use the pack's own engine modules
(`comfy.pack.cag_core...`), e.g. for `CaGError`.

Stubbed ComfyUI modules (installed with `patch.dict(sys.modules)` for the session that uses them):
- `folder_paths`: a folder registry over a temporary models directory, with the same semantics
  as ComfyUI's (core's "classifiers" key with its `{""}` filter, recursive listing, followlinks),
  and `get_input_directory()`: a temporary `input` folder beside it (Load Image's folder);
- `comfy.utils.ProgressBar`: records every `update_absolute` call and can raise the interrupt
  exception after N updates, as ComfyUI's hook does when the user presses Cancel;
- `comfy.model_management`: `get_torch_device()` -> cpu and `InterruptProcessingException`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from unittest.mock import patch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny test models gain nothing from intra-op threads, and on a small or shared machine the
# OpenMP workers spinning against each other made the node tests 12x slower (79 s vs 6.5 s on
# 2 busy cores). Set OMP_NUM_THREADS to choose otherwise.
TORCH_THREADS = torch.get_num_threads()  # torch's own choice (the cores), for the `all_threads` fixture
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


@pytest.fixture
def all_threads():
    """torch's own thread count for one test on a real network (Lite0 at 224 px gains from every
    core, unlike the tiny models), restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(saved)

REPO_ROOT = Path(__file__).resolve().parents[1]

PACK_NAME = "comfyui_cag"
SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

# Tiny open_clip architecture (random weights, 32 px), registered with open_clip by name.
TINY_CLIP_NAME = "cag-tiny-test-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# File names of the tiny models every node/workflow test can use.
TINY_CLASSIFIER = "tiny_timm.safetensors"  # tiny.TINY_ARCH (timm test net), 1000 ImageNet classes, BatchNorm
TINY_CLASSIFIER_10 = "tiny_timm10.safetensors"  # the same net with 10 classes
TINY_CLASSIFIER_NO_ARCH = "no_arch.safetensors"  # no architecture in the metadata
TINY_MAE = "tiny_mae.safetensors"
TINY_CLIP = "tiny_clip.safetensors"


# --------------------------------------------------------------------------------------------
# Stub modules


class InterruptProcessingException(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


@dataclass
class ProgressLog:
    updates: list[tuple[int, int, object]] = field(default_factory=list)  # (value, total, preview)
    bars: int = 0  # ProgressBars created
    interrupt_after: int | None = None  # raise on this many-th update (counted from the last reset)

    def reset(self):
        self.updates.clear()
        self.bars = 0
        self.interrupt_after = None


def make_folder_paths(models_dir: Path) -> ModuleType:
    fp = ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    # Like ComfyUI's: <base>/input, which exists from startup.
    fp.input_directory = str(models_dir.parent / "input")
    os.makedirs(fp.input_directory, exist_ok=True)
    fp.supported_pt_extensions = set(SUPPORTED_PT_EXTENSIONS)
    fp.folder_names_and_paths = {}

    def reset():
        fp.folder_names_and_paths.clear()
        fp.folder_names_and_paths["checkpoints"] = ([str(models_dir / "checkpoints")], set(SUPPORTED_PT_EXTENSIONS))
        # Core's own key: the {""} filter lists only files without an extension.
        fp.folder_names_and_paths["classifiers"] = ([str(models_dir / "classifiers")], {""})

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):
        if folder_name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[folder_name][0]
            if full_folder_path not in paths:
                paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
        else:
            fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(folder_name):
        return fp.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(folder_name):
        folders, extensions = fp.folder_names_and_paths[folder_name]
        found = set()
        for folder in folders:
            for dirpath, _dirs, files in os.walk(folder, followlinks=True):
                for name in files:
                    rel = os.path.relpath(os.path.join(dirpath, name), folder)
                    if not extensions or os.path.splitext(rel)[1].lower() in extensions:
                        found.add(rel)
        return sorted(found)

    def get_full_path(folder_name, filename):
        for folder in fp.folder_names_and_paths.get(folder_name, ([], set()))[0]:
            path = os.path.join(folder, filename)
            if os.path.isfile(path):
                return path
        return None

    def get_input_directory():
        return fp.input_directory

    fp.reset = reset
    fp.get_input_directory = get_input_directory
    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    reset()
    return fp


def make_comfy_modules(log: ProgressLog) -> dict[str, ModuleType]:
    comfy = ModuleType("comfy")
    comfy.__path__ = []  # a package, so `import comfy.utils` works
    utils = ModuleType("comfy.utils")
    mm = ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.get_torch_device = lambda: torch.device("cpu")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total
            self.current = 0
            self.node_id = node_id
            log.bars += 1

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            log.updates.append((self.current, self.total, preview))
            if log.interrupt_after is not None and len(log.updates) >= log.interrupt_after:
                log.interrupt_after = None  # like ComfyUI, the interrupt flag resets once raised
                raise InterruptProcessingException()

        def update(self, value):
            self.update_absolute(self.current + value)

    utils.ProgressBar = ProgressBar
    comfy.utils = utils
    comfy.model_management = mm
    return {"comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm}


def make_server_module() -> tuple[ModuleType, list]:
    """A `server` module whose PromptServer.instance records send_sync calls."""
    sent: list[tuple[str, dict, object]] = []
    server = ModuleType("server")

    class PromptServer:
        instance = None

        def __init__(self):
            self.client_id = "test-client"

        def send_sync(self, event, data, sid=None):
            sent.append((event, data, sid))

    PromptServer.instance = PromptServer()
    server.PromptServer = PromptServer
    return server, sent


def load_pack(name: str = PACK_NAME) -> ModuleType:
    """Import the repository root as a package, the way ComfyUI imports a custom node folder."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Tiny models


def write_tiny_models(models_dir: Path) -> None:
    """Tiny random models, saved where the loader nodes look for them."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from tiny import TINY_ARCH, tiny_timm_model

    from cag_core.mae import MAEConfig, mae_from_config, save_mae
    from cag_core.weights import save_file

    classifiers = models_dir / "classifiers"
    classifiers.mkdir(parents=True, exist_ok=True)
    metadata = {"cag_arch": TINY_ARCH}
    save_file(tiny_timm_model(1000).state_dict(), classifiers / TINY_CLASSIFIER, metadata=metadata)
    save_file(tiny_timm_model(10).state_dict(), classifiers / TINY_CLASSIFIER_10, metadata=metadata)
    save_file(tiny_timm_model(1000, seed=1).state_dict(), classifiers / TINY_CLASSIFIER_NO_ARCH)

    (models_dir / "mae").mkdir(exist_ok=True)
    tiny_mae = MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                         decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    save_mae(mae_from_config(tiny_mae, seed=0), models_dir / "mae" / TINY_MAE)

    register_tiny_clip(models_dir.parent / "open_clip_config")
    (models_dir / "cag_clip").mkdir(exist_ok=True)
    clip = CLIP(embed_dim=TINY_CLIP_CONFIG["embed_dim"], vision_cfg=CLIPVisionCfg(**TINY_CLIP_CONFIG["vision_cfg"]),
                text_cfg=CLIPTextCfg(**TINY_CLIP_CONFIG["text_cfg"]))
    save_file(clip.state_dict(), models_dir / "cag_clip" / TINY_CLIP)
    assert TINY_CLIP_NAME in open_clip.list_models()


def register_tiny_clip(config_dir: Path) -> None:
    import open_clip

    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / f"{TINY_CLIP_NAME}.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(path)


# --------------------------------------------------------------------------------------------
# Fixtures


@dataclass
class ComfyEnv:
    pack: ModuleType  # the loaded pack (root package)
    models_dir: Path
    folder_paths: ModuleType
    progress: ProgressLog
    modules: dict[str, ModuleType]

    @property
    def nodes(self):
        return self.pack.nodes

    @property
    def cag_core(self):
        return sys.modules[f"{PACK_NAME}.cag_core"]

    def node(self, key: str):
        """A fresh instance of a node class, by its mapping key."""
        return self.pack.NODE_CLASS_MAPPINGS[key]()

    def reset(self):
        self.folder_paths.reset()
        self.pack.nodes.register_model_folders()
        self.progress.reset()
        self.pack.nodes.model_cache.clear_all()


@pytest.fixture(scope="session")
def comfy_env(tmp_path_factory):
    """Stubbed ComfyUI modules in sys.modules and the pack imported under them (whole session)."""
    models_dir = tmp_path_factory.mktemp("comfyui") / "models"
    write_tiny_models(models_dir)
    folder_paths = make_folder_paths(models_dir)
    progress = ProgressLog()
    modules = {"folder_paths": folder_paths, **make_comfy_modules(progress)}
    with patch.dict(sys.modules, modules):
        pack = load_pack()
        importlib.import_module(f"{PACK_NAME}.nodes.model_cache")
        yield ComfyEnv(pack, models_dir, folder_paths, progress, modules)


@pytest.fixture
def comfy(comfy_env):
    """Per test: a fresh folder registry, progress log and model caches."""
    comfy_env.reset()
    yield comfy_env
    comfy_env.reset()


@pytest.fixture
def prompt_server():
    """A stub `server` module (PromptServer.instance.send_sync records its calls)."""
    server, sent = make_server_module()
    with patch.dict(sys.modules, {"server": server}):
        yield SimpleNamespace(module=server, sent=sent)


def run_node(node, **inputs):
    """Call a node's FUNCTION the way ComfyUI's executor does: inside torch.inference_mode()."""
    with torch.inference_mode():
        return getattr(node, node.FUNCTION)(**inputs)


def comfy_image(batch: int = 1, height: int = 24, width: int = 40, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """An IMAGE like LoadImage makes (float [B, H, W, C] in 0..1), created in inference mode as in ComfyUI."""
    with torch.inference_mode():
        return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Running the example workflows on tiny models


def core_load_image(image: str):
    """Core Load Image, as ComfyUI documents it: the picture as RGB IMAGE [1, H, W, 3], and its MASK
    = 1 - alpha (1 = transparent = may change; a 64x64 zero mask when it has no alpha)."""
    import numpy as np
    from PIL import Image

    picture = Image.open(REPO_ROOT / "workflows" / "inputs" / image[len("cag_example_"):])
    rgb = torch.from_numpy(np.array(picture.convert("RGB"))).float()[None] / 255
    if "A" in picture.getbands():
        mask = 1 - torch.from_numpy(np.array(picture.getchannel("A"))).float()[None] / 255
    else:
        mask = torch.zeros(1, 64, 64)
    return rgb, mask


def core_pad_for_outpaint(image, left, top, right, bottom, feathering):
    """Core Pad Image for Outpainting: the picture on a 0.5 gray canvas; MASK 1 on the new border
    and, inside the picture, ((feathering - d) / feathering)^2 within `feathering` px of a padded side."""
    b, h, w, c = image.shape
    canvas = torch.full((b, h + top + bottom, w + left + right, c), 0.5)
    canvas[:, top:top + h, left:left + w] = image
    mask = torch.ones(h + top + bottom, w + left + right)
    ys, xs = torch.arange(h)[:, None].float(), torch.arange(w)[None, :].float()
    far = float(max(h, w))
    d = torch.minimum(torch.minimum(ys if top else torch.full_like(ys, far), (h - ys) if bottom else torch.full_like(ys, far)),
                      torch.minimum(xs if left else torch.full_like(xs, far), (w - xs) if right else torch.full_like(xs, far)))
    inner = torch.where(d < feathering, ((feathering - d) / max(feathering, 1)) ** 2, torch.zeros(()))
    mask[top:top + h, left:left + w] = inner if feathering > 0 and 2 * feathering < min(h, w) else 0
    return canvas, mask[None]




# (node type, input) -> value used instead of the workflow's, so the examples run in seconds
# without downloads: every classifier becomes the tiny timm test-net file, the MAE the tiny
# MAE, CLIP the tiny registered architecture with its local checkpoint; the first stage is 16 px
# (so 16 -> 32 -> 64), batches have 2 images, and every stage runs 2 steps.
TINY_SUBSTITUTIONS = {
    ("CaGLoadClassifier", "source"): TINY_CLASSIFIER,
    ("CaGLoadClassifier", "architecture"): "",
    ("CaGLoadMAE", "mae_file"): TINY_MAE,
    ("CaGLoadMAE", "size"): "auto",
    ("CaGTextClassifier", "clip_model"): TINY_CLIP_NAME,
    ("CaGTextClassifier", "checkpoint"): TINY_CLIP,
    ("CaGInitNoise", "width"): 16,
    ("CaGInitNoise", "height"): 16,
    ("CaGInitNoise", "batch_size"): 2,
    ("CaGOptimize", "steps"): 2,
}


def substitute_tiny(prompt: dict, keep: set[tuple[str, str]] = frozenset()) -> dict:
    """A copy of an API-format prompt with TINY_SUBSTITUTIONS applied (except the pairs in `keep`)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        for name, value in list(node["inputs"].items()):
            key = (node["class_type"], name)
            if key in TINY_SUBSTITUTIONS and key not in keep and not isinstance(value, list):
                node["inputs"][name] = TINY_SUBSTITUTIONS[key]
    return prompt
