"""`MaskedAutoencoder`: the ViT MAE that every generation step passes the image through.

The module reproduces the state-dict layout of facebookresearch/mae (`models_mae.py`) key for key,
so the published `mae_visualize_vit_{base,large,huge}.pth` and `mae_visualize_vit_large_ganloss.pth`
load as they are:

    mae = load_mae("models/mae/mae_visualize_vit_large.pth")
    out01 = mae.reconstruct(images01, mask_ratio=0.75, generator=torch.Generator().manual_seed(0))

`reconstruct` masks a fresh random subset of patches on every call. Masked patches never reach the
encoder, so they get zero gradient that step; resampling the mask each step is what lets the whole
image move. The other released files are refused: `mae_pretrain_vit_*.pth` hold only the encoder,
and the `*_full` ones were trained with `norm_pix_loss` and predict per-patch-normalized pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .errors import CaGError, WeightsError, describe_key_mismatch
from .transfer import to_device
from .weights import PICKLE_SUFFIXES, load_file, read_safetensors_metadata, save_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# safetensors metadata key written by `save_mae` (JSON of the config's fields).
CONFIG_METADATA_KEY = "cag_mae_config"

VISUALIZE_FILES = (
    "mae_visualize_vit_base.pth",
    "mae_visualize_vit_large.pth",
    "mae_visualize_vit_large_ganloss.pth",
    "mae_visualize_vit_huge.pth",
)


@dataclass(frozen=True)
class MAEConfig:
    """Architecture of a ViT masked autoencoder (the fields of facebookresearch/mae's constructor)."""

    img_size: int  # square input side the patch grid and position embeddings are built for
    patch_size: int  # side of one square patch; img_size must be a multiple of it
    embed_dim: int  # encoder width
    depth: int  # encoder blocks
    num_heads: int  # encoder attention heads
    decoder_embed_dim: int  # decoder width
    decoder_depth: int  # decoder blocks
    decoder_num_heads: int  # decoder attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / block width
    norm_eps: float = 1e-6  # LayerNorm epsilon (official: partial(nn.LayerNorm, eps=1e-6))

    def __post_init__(self):
        if self.patch_size <= 0 or self.img_size <= 0 or self.img_size % self.patch_size:
            raise CaGError(
                f"MAEConfig: img_size {self.img_size} must be a positive multiple of patch_size {self.patch_size}."
            )
        for width, heads, what in (
            (self.embed_dim, self.num_heads, "embed_dim/num_heads"),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim/decoder_num_heads"),
        ):
            # 2-D sin-cos position embeddings split the width in four (sin/cos of rows and columns).
            if heads <= 0 or width <= 0 or width % heads or width % 4:
                raise CaGError(
                    f"MAEConfig: {what} = {width}/{heads}; the width must be divisible by the head count and by 4."
                )
        if self.depth < 0 or self.decoder_depth < 0 or self.mlp_ratio <= 0:
            raise CaGError("MAEConfig: depth and decoder_depth must be >= 0 and mlp_ratio > 0.")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


# The three architectures released by facebookresearch/mae (models_mae.py, mae_vit_*_dec512d8b).
MAE_CONFIGS: dict[str, MAEConfig] = {
    "base": MAEConfig(224, 16, 768, 12, 12, 512, 8, 16),
    "large": MAEConfig(224, 16, 1024, 24, 16, 512, 8, 16),
    "huge": MAEConfig(224, 14, 1280, 32, 16, 512, 8, 16),
}


def list_mae_configs() -> list[str]:
    """Names of the registered MAE architectures."""
    return list(MAE_CONFIGS)


def get_mae_config(name: str, **overrides) -> MAEConfig:
    """A copy of the registered config `name`, with any fields replaced by `overrides`."""
    if name not in MAE_CONFIGS:
        raise CaGError(f"Unknown MAE config '{name}'. Available: {list_mae_configs()}.")
    try:
        return dataclasses.replace(MAE_CONFIGS[name], **overrides)
    except TypeError as exc:  # an override that is not a field
        fields = [f.name for f in dataclasses.fields(MAEConfig)]
        raise CaGError(f"Bad MAE config override {sorted(overrides)}: valid fields are {fields}.") from exc


def _config_name(config: MAEConfig) -> str:
    """The registry name of `config`, or "custom"."""
    return next((name for name, c in MAE_CONFIGS.items() if c == config), "custom")


# ----------------------------------------------------------------------------------------------
# Building blocks. Attribute names are the state-dict names of timm's Block that MAE used.


class PatchEmbed(nn.Module):
    """Conv patchifier: [B, 3, H, W] -> [B, L, D] tokens in row-major patch order."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)  # rows stacked [q; k; v]
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        # Default scale 1/sqrt(head_dim) is the one timm's Block used.
        # unbind: one backward op (a stack) instead of three zero-filled select_backwards and the
        # adds that sum them; the same values, fewer kernel launches on a GPU.
        q, k, v = qkv.unbind(0)
        x = attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v. On CPUs, half-precision inputs (bf16 autocast, opt-in
    there) are computed in fp32 and cast back: PyTorch's CPU flash attention took 1.5-2.3x as long
    in bf16 as in fp32, forward+backward, at the MAE's shapes (50 or 197 tokens, head dim 64 or
    32; 2 cores, benchmarks/README.md), mostly in its bf16 backward; the upcast is both faster and
    more precise there."""
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm `Block` without dropout / drop-path)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_pos_embed(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding [grid_size**2 + 1, dim], first (cls) row zero.

    Same values as facebookresearch/mae `get_2d_sincos_pos_embed` (computed in float64): that code
    builds `np.meshgrid(w, h)`, so the first half of each row encodes the patch's column and the
    second half its row.
    """
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([one_axis(cols), one_axis(rows)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb]).float()


# ----------------------------------------------------------------------------------------------
# Masking


def mask_noise(batch: int, num_patches: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise [batch, num_patches] whose argsort picks the kept patches (MAE random_masking).

    Drawn on the generator's device (the CPU unless a device generator is given), so the masks for
    a seed are the same whichever device the model runs on.
    """
    device = generator.device if generator is not None else "cpu"
    return torch.rand(batch, num_patches, generator=generator, device=device)


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """How many patches the encoder sees: int(L * (1 - ratio)) as in MAE, but at least one so the
    image always receives some gradient."""
    _check_mask_ratio(mask_ratio)
    return max(1, int(num_patches * (1 - mask_ratio)))


def mask_from_noise(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """Binary mask [B, L] for `noise`, MAE convention: 0 = kept (seen by the encoder), 1 = masked."""
    ids_keep, _ = _masking_ids(noise, num_kept(noise.shape[1], mask_ratio))
    return torch.ones_like(noise).scatter_(1, ids_keep, 0.0)


def _masking_ids(noise: torch.Tensor, len_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids_keep [B, len_keep], ids_restore [B, L]): the lowest-noise patches are kept."""
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, :len_keep], ids_restore


def _check_mask_ratio(mask_ratio: float):
    if not 0.0 <= float(mask_ratio) < 1.0:
        raise CaGError(f"mask_ratio must be in [0, 1) (0 = no masking, MAE default 0.75); got {mask_ratio}.")


# ----------------------------------------------------------------------------------------------
# The model


class MaskedAutoencoder(nn.Module):
    """ViT masked autoencoder with the facebookresearch/mae state-dict layout.

    config_name: registry name ("base", "large", "huge") or "custom"; informational.
    init_weights: False leaves parameters as allocated (for loaders that overwrite all of them).
    """

    def __init__(self, config: MAEConfig, *, config_name: str | None = None, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.config_name = config_name or _config_name(config)
        c = config
        tokens = c.num_patches + 1  # + cls token

        # Encoder.
        self.patch_embed = PatchEmbed(c.patch_size, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        # Official stores the fixed sin-cos tables as frozen Parameters, so they are in the file.
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, c.embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.depth)]
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)

        # Decoder.
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, tokens, c.decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [
                Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, c.norm_eps)
                for _ in range(c.decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=c.norm_eps)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patch_size**2 * 3, bias=True)

        # Non-persistent: they follow .to(device) but are not part of the official state dict.
        self.register_buffer("pixel_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.ones(1, 3, 1, 1), persistent=False)
        self.reset_constants()
        if init_weights:
            self.initialize_weights()

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @torch.no_grad()
    def reset_constants(self):
        """Fill the non-persistent normalization buffers (needed after `to_empty`)."""
        self.pixel_mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.pixel_std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @torch.no_grad()
    def initialize_weights(self, generator: torch.Generator | None = None):
        """Official MAE initialization: sin-cos position tables, xavier-uniform linears and patch
        projection, normal(0.02) cls/mask tokens, LayerNorm 1/0."""
        g = self.config.grid_size
        self.pos_embed.copy_(sincos_pos_embed(self.config.embed_dim, g).unsqueeze(0))
        self.decoder_pos_embed.copy_(sincos_pos_embed(self.config.decoder_embed_dim, g).unsqueeze(0))
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1), generator=generator)
        # Official keeps torch's default Conv2d bias init: uniform(+-1/sqrt(fan_in)).
        bound = (w[0].numel()) ** -0.5
        nn.init.uniform_(self.patch_embed.proj.bias, -bound, bound, generator=generator)
        nn.init.normal_(self.cls_token, std=0.02, generator=generator)
        nn.init.normal_(self.mask_token, std=0.02, generator=generator)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- pieces of the official forward, kept separate so callers and tests can reach them ------

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, L, p*p*3], each patch flattened (row, column, channel) as in MAE."""
        p = self.config.patch_size
        return rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, L, p*p*3] -> [B, 3, H, W], the inverse of `patchify`."""
        p, g = self.config.patch_size, self.config.grid_size
        return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=g, w=g, p=p, q=p, c=3)

    def forward_encoder(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Normalized images [B, 3, S, S] -> latent [B, 1 + kept, D] from the kept patches only."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls.to(x.dtype), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Latent [B, 1 + kept, D] -> predicted normalized patches [B, L, p*p*3] for every patch."""
        x = self.decoder_embed(latent)
        B, n, C = x.shape
        # Mask tokens fill the dropped positions, then ids_restore puts every token back in place.
        mask_tokens = self.mask_token.to(x.dtype).expand(B, ids_restore.shape[1] + 1 - n, C)
        rest = torch.cat([x[:, 1:], mask_tokens], dim=1)
        rest = torch.gather(rest, 1, ids_restore.unsqueeze(-1).expand(-1, -1, C))
        x = torch.cat([x[:, :1], rest], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def resize(self, images01: torch.Tensor) -> torch.Tensor:
        """Images to the model's square input size (bicubic, differentiable; untouched if already there)."""
        s = self.config.img_size
        if images01.shape[-2:] == (s, s):
            return images01
        return F.interpolate(images01, size=(s, s), mode="bicubic", align_corners=False, antialias=False)

    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masking noise [batch, L] for this model (see `mask_noise`)."""
        return mask_noise(batch, self.config.num_patches, generator)

    def reconstruct(
        self,
        images01: torch.Tensor,
        mask_ratio: float = 0.75,
        generator: torch.Generator | None = None,
        paste_visible: bool = False,
        *,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask a fresh random subset of patches per image and reconstruct: [B, 3, H, W] in [0, 1]
        (any H, W) -> [B, 3, S, S] in [0, 1], S = config.img_size.

        generator: draws the masking noise on the CPU, so results are reproducible per seed.
        paste_visible: put the (resized) input back where patches were visible to the encoder.
        noise: explicit masking noise [B, L] instead of drawing it (same masks for different calls).
        Differentiable w.r.t. `images01` through the visible patches.
        """
        _check_mask_ratio(mask_ratio)
        if images01.ndim != 4 or images01.shape[1] != 3 or not images01.is_floating_point():
            raise CaGError(f"MAE reconstruct expects float images [B, 3, H, W]; got {tuple(images01.shape)}.")
        B, L = images01.shape[0], self.config.num_patches
        x01 = self.resize(images01)
        x = (x01 - self.pixel_mean.to(x01.dtype)) / self.pixel_std.to(x01.dtype)

        if mask_ratio == 0 and noise is None:
            # No masking: identity order, and the generator is left untouched.
            ids = torch.arange(L, device=x.device).expand(B, L)
            ids_keep, ids_restore = ids, ids
        else:
            if noise is None:
                noise = self.sample_noise(B, generator)
            elif noise.shape != (B, L):
                raise CaGError(f"MAE reconstruct: noise must have shape {(B, L)}; got {tuple(noise.shape)}.")
            ids_keep, ids_restore = _masking_ids(to_device(noise, x.device), num_kept(L, mask_ratio))

        pred = self.forward_decoder(self.forward_encoder(x, ids_keep), ids_restore)
        # The visualize checkpoints predict ImageNet-normalized pixels (norm_pix_loss=False).
        out = self.unpatchify(pred) * self.pixel_std + self.pixel_mean
        if paste_visible:
            p, g = self.config.patch_size, self.config.grid_size
            visible = torch.zeros(B, L, dtype=torch.bool, device=x.device).scatter_(1, ids_keep, True)
            visible = visible.view(B, 1, g, g).repeat_interleave(p, 2).repeat_interleave(p, 3)
            out = torch.where(visible, x01.to(out.dtype), out)
        return out.clamp(0, 1).to(images01.dtype)

    forward = reconstruct


# ----------------------------------------------------------------------------------------------
# Resolve, read, build, load


def _resolve_config(config: MAEConfig | str) -> tuple[MAEConfig, str]:
    if isinstance(config, MAEConfig):
        return config, _config_name(config)
    return get_mae_config(config), config


def _build(config: MAEConfig, name: str) -> MaskedAutoencoder:
    """An uninitialized CPU model: built on "meta" (no random init of weights about to be
    overwritten), then given real storage; the normalization constants are refilled."""
    with torch.inference_mode(False):
        with torch.device("meta"):
            model = MaskedAutoencoder(config, config_name=name, init_weights=False)
        model = model.to_empty(device="cpu")
        model.reset_constants()
    return model


def _freeze(model: MaskedAutoencoder) -> MaskedAutoencoder:
    return model.eval().requires_grad_(False)


def mae_from_config(name_or_config: MAEConfig | str, seed: int | None = None) -> MaskedAutoencoder:
    """A randomly initialized (official init), frozen, eval-mode MAE on the CPU; `seed` makes it
    reproducible (otherwise torch's global RNG is used)."""
    config, name = _resolve_config(name_or_config)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    model = _build(config, name)
    with torch.inference_mode(False):
        model.initialize_weights(generator)
    return _freeze(model)


def save_mae(model: MaskedAutoencoder, path: str | os.PathLike):
    """Write the official-layout state dict as .safetensors, with the config in the metadata so
    `load_mae` needs no config argument."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CaGError(f"save_mae writes .safetensors files; got '{path.name}'.")
    config_json = json.dumps(dataclasses.asdict(model.config))
    save_file(model.state_dict(), path, metadata={CONFIG_METADATA_KEY: config_json})


def _peek_pickle(path: Path) -> tuple[list[str], object]:
    """(top-level keys, saved training `args` or None) of a pickled checkpoint, read with mmap so
    the tensors are not loaded; ([], None) when the file cannot be peeked (load_file then reports)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a corrupt pickle can fail with any error type (IndexError, KeyError, ...)
        # Legacy (non-zip) format, corrupt file, foreign pickled classes: nothing to learn here.
        return [], None
    if not isinstance(obj, dict):
        return [], None
    return [str(k) for k in obj], obj.get("args")


def _read_mae_file(path: Path) -> tuple[dict[str, torch.Tensor], MAEConfig | None]:
    """(state dict, config from save_mae's metadata or None). Refuses norm-pix checkpoints."""
    if "_full" in path.name.lower():
        raise WeightsError(_norm_pix_message(path.name))
    if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file():
        keys, args = _peek_pickle(path)
        norm_pix = args.get("norm_pix_loss") if isinstance(args, dict) else getattr(args, "norm_pix_loss", None)
        if norm_pix:
            raise WeightsError(_norm_pix_message(path.name))
        # Training checkpoints keep their argparse Namespace beside the weights; allow just that class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = load_file(path, container_key="model" if "model" in keys else None)
        return state, None
    state = load_file(path)
    meta = read_safetensors_metadata(path).get(CONFIG_METADATA_KEY)
    if meta is None:
        return state, None
    try:
        return state, MAEConfig(**json.loads(meta))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"'{path.name}' has an unreadable '{CONFIG_METADATA_KEY}' metadata entry: {exc}") from exc


def _norm_pix_message(filename: str) -> str:
    return (
        f"'{filename}' is a norm-pix checkpoint (trained with norm_pix_loss): it predicts per-patch-normalized "
        f"pixels, not images, so it cannot be used to reconstruct; use one of {', '.join(VISUALIZE_FILES)}."
    )


def _check_has_decoder(state: dict[str, torch.Tensor], filename: str):
    if not any(k.startswith("decoder_") for k in state):
        raise WeightsError(
            f"'{filename}' holds only an MAE encoder (no decoder_* weights; e.g. mae_pretrain_vit_*.pth), "
            f"so it cannot reconstruct images; use one of {', '.join(VISUALIZE_FILES)} from facebookresearch/mae."
        )


def detect_config(state: dict[str, torch.Tensor], filename: str = "checkpoint") -> tuple[MAEConfig, str]:
    """(config, name) of the registered architecture whose patch size, width and depth match."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 4:
        raise WeightsError(
            f"'{filename}' does not look like an MAE checkpoint (no 4-D patch_embed.proj.weight); "
            f"first keys: {list(state)[:6]}."
        )
    width, patch = proj.shape[0], proj.shape[-1]
    depth = len({k.split(".")[1] for k in state if re.match(r"blocks\.\d+\.", k)})
    for name, config in MAE_CONFIGS.items():
        if (config.embed_dim, config.patch_size, config.depth) == (width, patch, depth):
            return dataclasses.replace(config), name
    raise WeightsError(
        f"'{filename}' is an MAE with patch {patch}, width {width}, {depth} blocks, which matches none of "
        f"{list_mae_configs()}; pass config=MAEConfig(...) to load it."
    )


def _load_strict(model: MaskedAutoencoder, state: dict[str, torch.Tensor], filename: str):
    """load_state_dict(strict=True), but a misfit raises a WeightsError that lists what differs."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} (expected {tuple(v.shape)}, found {tuple(state[k].shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = [describe_key_mismatch(missing, unexpected)] if missing or unexpected else []
        if wrong_shape:
            more = f", ... ({len(wrong_shape)} in all)" if len(wrong_shape) > 6 else ""
            parts.append("shape mismatches: " + ", ".join(wrong_shape[:6]) + more)
        raise WeightsError(
            f"'{filename}' does not fit MAE config '{model.config_name}' {model.config}: {'; '.join(parts)}."
        )
    model.load_state_dict(state, strict=True)


def load_mae(path: str | os.PathLike, config: MAEConfig | str | None = None) -> MaskedAutoencoder:
    """A frozen, eval-mode MAE on the CPU from an official-layout .pth/.pt or .safetensors file.

    config: a registry name or MAEConfig; by default taken from save_mae's metadata, else detected
    from the tensor shapes. Safe to call inside torch.inference_mode(): the model is built outside
    it, so its weights can take part in autograd later.
    """
    path = Path(path)
    with torch.inference_mode(False):
        state, saved_config = _read_mae_file(path)
        _check_has_decoder(state, path.name)
        if config is not None:
            config, name = _resolve_config(config)
        elif saved_config is not None:
            config, name = saved_config, _config_name(saved_config)
        else:
            config, name = detect_config(state, path.name)
        model = _build(config, name)
        _load_strict(model, state, path.name)
    return _freeze(model)
