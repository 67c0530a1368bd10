"""The straightforward reference that `benchmarks.speed` measures the engine against.

One optimize step written the plain way: a Python loop over the images, fp32, one MAE mask at a
time, nothing fused or cached. For each image it rebuilds the image from its Fourier parameters
(every constant recomputed), resizes it to the MAE's 224 px, normalizes, patchifies, keeps the
visible patches of this image's mask, runs the encoder and decoder block by block with attention
written out (softmax(q k^T / sqrt(d)) v, as in the timm Attention the official MAE used), puts the
mask tokens back, unpatchifies, cuts the image's random views one at a time, and classifies them
(the views of one image together, in the default NCHW layout).

It uses the engine's models (weights), the same starting parameters and the same random numbers
in the same order (MAE masking noise [B, L], then the view matrices), so its loss and gradient
must equal the engine's up to rounding: `benchmarks.speed` and tests/test_speed_equivalence.py
check that. Each view is blurred by its own 2-D Gaussian kernel when the config blurs views (the
engine: two 1-D passes over all views at once), and gets its own noise, the fixed field rolled by
torch.roll, when the config adds view noise (the engine: one gather for all views). Supported: one
classifier, the per-image losses (target cross-entropy, the BN-statistics prior measured per image
on the plain model's BatchNorm layers, total variation; diversity weight 0), paste_visible False --
the settings the benchmark runs.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from cag_core.augment import NOISE_FIELD_SEED, NO_AUGMENT, AugmentConfig
from cag_core.classifier import Classifier
from cag_core.mae import IMAGENET_MEAN, IMAGENET_STD, MaskedAutoencoder
from cag_core.optimize import OptimizeConfig, image_parameterization
from cag_core.parameterization import _COLOR_SQRT, _FOURIER_MAGIC, own_decay_power
from cag_core.streams import ImageStreams
from cag_core.targets import Target


def check_supported(config: OptimizeConfig, classifier: Classifier) -> None:
    if not isinstance(classifier, Classifier):
        raise ValueError("The reference step supports one Classifier (not an ensemble).")
    if config.diversity_weight or config.paste_visible or config.optimizer != "adam":
        raise ValueError(f"The reference step supports the per-image losses and Adam only; got diversity_weight="
                         f"{config.diversity_weight}, paste_visible={config.paste_visible}, optimizer={config.optimizer}.")
    if config.image_std is not None or config.focus is not None or config.chroma_decay:
        raise ValueError("The reference Fourier image is the plain 1/f^decay_power one: no image_std, focus or "
                         "chroma_decay.")
    if config.bn_every != 1:
        raise ValueError(f"The reference step measures the BN-statistics prior every step; got bn_every="
                         f"{config.bn_every} (use 1).")


# -- the image from its parameters --------------------------------------------------------------


def fourier_image(spectrum: torch.Tensor, size: tuple[int, int], decay_power: float = 1.0) -> torch.Tensor:
    """One image [1, 3, H, W] from its real-view spectrum [1, 3, H, W//2+1, 2]; constants rebuilt
    (the step scale 1/f^decay_power: Lucid's 1, the default 1.5)."""
    h, w = size
    device = spectrum.device
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    scale = 1.0 / torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(h, w)) ** decay_power
    color = (_COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()).to(device)
    image = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=size, norm="ortho") / _FOURIER_MAGIC
    image = torch.einsum("bchw,dc->bdhw", image, color)
    return torch.sigmoid(image)


# -- the MAE, one image and one mask at a time ---------------------------------------------------


def _block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    n, t, d = x.shape
    heads = blk.attn.num_heads
    h = F.layer_norm(x, (d,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    qkv = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(n, t, 3, heads, d // heads)
    qkv = qkv.permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
    a = (attn @ v).transpose(1, 2).reshape(n, t, d)
    x = x + F.linear(a, blk.attn.proj.weight, blk.attn.proj.bias)
    h = F.layer_norm(x, (d,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    h = F.linear(F.gelu(F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias)
    return x + h


def mae_reconstruct_one(mae: MaskedAutoencoder, image01: torch.Tensor, noise: torch.Tensor | None, mask_ratio: float):
    """[1, 3, H, W] in [0, 1] -> [1, 3, S, S] in [0, 1]; `noise` [L] picks the kept patches (None: all)."""
    c = mae.config
    s, p, g, L = c.img_size, c.patch_size, c.grid_size, c.num_patches
    x01 = image01
    if x01.shape[-2:] != (s, s):
        x01 = F.interpolate(x01, size=(s, s), mode="bicubic", align_corners=False)
    device = image01.device
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x01 - mean) / std
    tokens = F.conv2d(x, mae.patch_embed.proj.weight, mae.patch_embed.proj.bias, stride=p)
    tokens = tokens.flatten(2).transpose(1, 2) + mae.pos_embed[:, 1:]  # [1, L, D]
    order = torch.arange(L, device=device) if noise is None else torch.argsort(noise.to(device))
    keep = L if noise is None else max(1, int(L * (1 - mask_ratio)))
    h = torch.cat([mae.cls_token + mae.pos_embed[:, :1], tokens[:, order[:keep]]], dim=1)
    for blk in mae.blocks:
        h = _block(blk, h)
    h = F.layer_norm(h, (c.embed_dim,), mae.norm.weight, mae.norm.bias, mae.norm.eps)
    d = F.linear(h, mae.decoder_embed.weight, mae.decoder_embed.bias)
    shuffled = torch.cat([d[:, 1:], mae.mask_token.expand(1, L - keep, -1)], dim=1)
    restored = shuffled[:, torch.argsort(order)]
    h = torch.cat([d[:, :1], restored], dim=1) + mae.decoder_pos_embed
    for blk in mae.decoder_blocks:
        h = _block(blk, h)
    h = F.layer_norm(h, (c.decoder_embed_dim,), mae.decoder_norm.weight, mae.decoder_norm.bias, mae.decoder_norm.eps)
    pred = F.linear(h, mae.decoder_pred.weight, mae.decoder_pred.bias)[:, 1:]
    # Official unpatchify: [1, L, p*p*3] -> [1, 3, S, S].
    out = torch.einsum("nhwpqc->nchpwq", pred.reshape(1, g, g, p, p, 3)).reshape(1, 3, s, s)
    return (out * std + mean).clamp(0, 1)


# -- random views, one at a time -----------------------------------------------------------------


def view_matrices(cfg: AugmentConfig, streams: ImageStreams) -> torch.Tensor:
    """[batch * crops, 2, 3] affine matrices, drawn as the engine draws them (augment.py): each
    image's crop numbers, then its flips, then (centred crops) its normals, from its own stream."""
    draws = [(torch.rand(cfg.crops, 6, generator=g),
              torch.rand(cfg.crops, generator=g) if cfg.flip else None,
              torch.randn(2, cfg.crops, generator=g) if cfg.center_std is not None else None)
             for g in streams.generators]
    n = len(streams) * cfg.crops
    u = torch.cat([crop for crop, _, _ in draws])
    area = cfg.crop_scale[0] + (cfg.crop_scale[1] - cfg.crop_scale[0]) * u[:, 0]
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    if cfg.center_std is None:  # centre anywhere the crop fits
        cx, cy = 2 * u[:, 2] - 1, 2 * u[:, 3] - 1
    else:  # centre ~ N(0, center_std) in units of how far the crop can move, clipped
        normals = torch.cat([normal for _, _, normal in draws], 1)  # [2, n], image by image
        cx, cy = (cfg.center_std * normals).clamp(-1, 1)
    tx = (1 - sx) * cx + 2 * cfg.jitter * (2 * u[:, 4] - 1)
    ty = (1 - sy) * cy + 2 * cfg.jitter * (2 * u[:, 5] - 1)
    flip = torch.where(torch.cat([f for _, f, _ in draws]) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)
    zero = torch.zeros(n)
    return torch.stack([torch.stack([sx * flip, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)


def view_sigmas(cfg: AugmentConfig, streams: ImageStreams) -> torch.Tensor | None:
    """[batch * crops] view blur sigmas in pixels, U(0, blur), drawn after each image's view numbers
    (as augment.view_blurs); None for sharp views."""
    if not cfg.blur:
        return None
    return torch.cat([cfg.blur * torch.rand(cfg.crops, generator=g) for g in streams.generators])


def view_noise_draws(cfg: AugmentConfig, streams: ImageStreams) -> torch.Tensor | None:
    """[batch * crops, 3]: each view's noise std U(0, noise) and its field offsets, drawn after the
    blur sigmas (as augment.view_noises); None for clean views."""
    if not cfg.noise:
        return None
    draws = torch.cat([torch.rand(cfg.crops, 3, generator=g) for g in streams.generators])
    draws[:, 0] *= cfg.noise
    return draws


def noise_one(view: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
    """One view [1, C, H, W] plus its noise: the fixed standard-normal field (regenerated from its
    seed), rolled up by row offset x H and left by column offset x W, times its std."""
    _, c, h, w = view.shape
    field = torch.randn((c, h, w), generator=torch.Generator().manual_seed(NOISE_FIELD_SEED)).to(view.device)
    dy, dx = min(int(draw[1] * h), h - 1), min(int(draw[2] * w), w - 1)
    return view + float(draw[0]) * torch.roll(field, shifts=(-dy, -dx), dims=(1, 2))[None]


def one_view(image: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with torch.autocast(image.device.type, enabled=False):  # sampling positions in fp32, as in the engine
        grid = F.affine_grid(theta[None].float(), [1, image.shape[1], *size], align_corners=False)
        return F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def blur_one(view: torch.Tensor, sigma: float, max_sigma: float) -> torch.Tensor:
    """One view [1, C, H, W] blurred by a 2-D Gaussian of this sigma (the outer product of the 1-D
    kernel, written out), reflected at the border, truncated at 3 * max_sigma as in the engine."""
    radius = max(1, math.ceil(3 * max_sigma))
    x = torch.arange(-radius, radius + 1, device=view.device, dtype=view.dtype)
    k1 = torch.exp(-0.5 * (x / max(float(sigma), 1e-2)) ** 2)
    k1 = k1 / k1.sum()
    kernel = (k1[:, None] * k1[None, :]).expand(view.shape[1], 1, -1, -1)
    padded = F.pad(view, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(padded, kernel, groups=view.shape[1])


def classify(classifier: Classifier, views01: torch.Tensor) -> torch.Tensor:
    """Logits of views in [0, 1], normalization constants rebuilt, default layout."""
    if views01.shape[-2:] != classifier.input_size:
        views01 = F.interpolate(views01, size=classifier.input_size, mode=classifier.interpolation, align_corners=False)
    device = views01.device
    mean = torch.tensor(classifier.mean.flatten().tolist(), device=device).view(1, 3, 1, 1)
    std = torch.tensor(classifier.std.flatten().tolist(), device=device).view(1, 3, 1, 1)
    x = (views01 - mean) / std
    if classifier._features_fn is not None and classifier._head_fn is not None:
        return classifier._head_fn(classifier._features_fn(x))
    model = classifier.model
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return model.forward_head(model.forward_features(x))
    return model(x)


# -- the step ------------------------------------------------------------------------------------


def reference_loss(
    params: torch.Tensor,
    size: tuple[int, int],
    classifier: Classifier,
    target: Target,
    config: OptimizeConfig,
    mae: MaskedAutoencoder | None,
    streams: ImageStreams,
) -> torch.Tensor:
    """The step's loss, the sum of the images' losses, image by image; `params` are the engine's
    (Fourier spectrum or pixels)."""
    check_supported(config, classifier)
    batch = params.shape[0]
    cfg = config.augment
    noise = None
    if mae is not None and config.mask_ratio > 0:  # each image's mask first, from its stream
        noise = torch.stack([torch.rand(mae.config.num_patches, generator=g) for g in streams.generators])
    thetas = None if cfg == NO_AUGMENT else view_matrices(cfg, streams).to(params.device)
    sigmas = None if cfg == NO_AUGMENT else view_sigmas(cfg, streams)
    noises = None if cfg == NO_AUGMENT else view_noise_draws(cfg, streams)
    view_size = (config.view_size,) * 2 if config.view_size else classifier.input_size
    total = params.new_zeros(())
    for i in range(batch):
        with torch.autocast(params.device.type, enabled=False):  # the image is fp32, as in the engine
            decay = own_decay_power("fourier") if config.decay_power is None else config.decay_power
            image = fourier_image(params[i : i + 1], size, decay) if config.parameterization == "fourier" else params[i : i + 1]
        if config.tv_weight > 0:  # of the image itself, before the MAE
            dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
            dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
            total = total + config.tv_weight * (dx + dy)
        if mae is not None:
            image = mae_reconstruct_one(mae, image, None if noise is None else noise[i], config.mask_ratio)
        if cfg == NO_AUGMENT:  # the engine resizes instead of sampling views, and draws nothing
            views = F.interpolate(image, size=view_size, mode="bilinear", align_corners=False)
        else:
            views = [one_view(image, thetas[i * cfg.crops + j], view_size) for j in range(cfg.crops)]
            if sigmas is not None:
                views = [blur_one(v, sigmas[i * cfg.crops + j], cfg.blur) for j, v in enumerate(views)]
            if noises is not None:
                views = [noise_one(v, noises[i * cfg.crops + j]) for j, v in enumerate(views)]
            views = torch.cat(views)
        with bn_distances(classifier, config.bn_weight > 0) as distances:
            log_probs = F.log_softmax(classify(classifier, views).float(), dim=-1)
        loss = -(target.positive[i] * log_probs).sum(-1)
        if target.negative[i].abs().sum() > 0:
            loss = loss + (target.negative[i] * log_probs.exp()).sum(-1)
        total = total + loss.mean()
        if distances:
            total = total + config.bn_weight * torch.stack(distances).mean()
    return total


@contextlib.contextmanager
def bn_distances(classifier: Classifier, on: bool):
    """While on: every BatchNorm layer of the plain model appends the distance of this image's
    statistics (over its views and pixels, at the layer's input) from the running ones."""
    distances: list[torch.Tensor] = []

    def hook(module, inputs, _output):
        x = inputs[0].float()
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        distances.append(torch.linalg.vector_norm(mean - module.running_mean) + torch.linalg.vector_norm(var - module.running_var))

    layers = [m for m in classifier.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if on else []
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        yield distances
    finally:
        for handle in handles:
            handle.remove()


def reference_optimize(
    images01: torch.Tensor,
    classifier: Classifier,
    target: Target,
    *,
    config: OptimizeConfig,
    mae: MaskedAutoencoder | None,
    streams: ImageStreams,
) -> tuple[torch.Tensor, list[float]]:
    """`config.steps` plain Adam steps (for-loop Adam, no fusion); returns (parameters, losses:
    the mean over the images per step, as the engine reports them)."""
    check_supported(config, classifier)
    size = tuple(images01.shape[-2:])
    with torch.inference_mode(False), torch.enable_grad():
        params = image_parameterization(images01.detach().clone(), config).params[0].detach().clone()
        params.requires_grad_(True)
        optimizer = torch.optim.Adam([params], lr=config.lr, foreach=False, fused=False)
        losses = []
        for step in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = reference_loss(params, size, classifier, target, config, mae, streams)
            loss.backward()
            optimizer.step()
            if config.parameterization == "pixels":
                with torch.no_grad():
                    params.clamp_(0, 1)
            losses.append(float(loss.detach()) / params.shape[0])
    return params.detach(), losses
