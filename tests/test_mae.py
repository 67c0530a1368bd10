"""MaskedAutoencoder: official layout, loading and refusals, and the reconstruct contract."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from cag_core.errors import CaGError, WeightsError
from cag_core.mae import (
    MAE_CONFIGS,
    MAEConfig,
    MaskedAutoencoder,
    attention,
    detect_config,
    get_mae_config,
    list_mae_configs,
    load_mae,
    mae_from_config,
    mask_from_noise,
    save_mae,
    sincos_pos_embed,
)
from cag_core.weights import save_file

TINY = MAEConfig(
    img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
)


def official_layout(c: MAEConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of facebookresearch/mae MaskedAutoencoderViT, written from its source, not
    from cag_core.mae (timm Block: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""
    tokens = (c.img_size // c.patch_size) ** 2 + 1

    def block(prefix: str, d: int) -> dict[str, tuple[int, ...]]:
        h = int(d * c.mlp_ratio)
        return {
            f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
            f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
            f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
            f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
            f"{prefix}.mlp.fc1.weight": (h, d), f"{prefix}.mlp.fc1.bias": (h,),
            f"{prefix}.mlp.fc2.weight": (d, h), f"{prefix}.mlp.fc2.bias": (d,),
        }

    d, dd, p = c.embed_dim, c.decoder_embed_dim, c.patch_size
    layout = {
        "cls_token": (1, 1, d), "pos_embed": (1, tokens, d),
        "mask_token": (1, 1, dd), "decoder_pos_embed": (1, tokens, dd),
        "patch_embed.proj.weight": (d, 3, p, p), "patch_embed.proj.bias": (d,),
    }
    for i in range(c.depth):
        layout |= block(f"blocks.{i}", d)
    layout |= {"norm.weight": (d,), "norm.bias": (d,), "decoder_embed.weight": (dd, d), "decoder_embed.bias": (dd,)}
    for i in range(c.decoder_depth):
        layout |= block(f"decoder_blocks.{i}", dd)
    layout |= {
        "decoder_norm.weight": (dd,), "decoder_norm.bias": (dd,),
        "decoder_pred.weight": (p * p * 3, dd), "decoder_pred.bias": (p * p * 3,),
    }
    return layout


def meta_state_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = MaskedAutoencoder(get_mae_config(name))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def numel(layout: dict[str, tuple[int, ...]]) -> int:
    return sum(torch.Size(s).numel() for s in layout.values())


@pytest.fixture(scope="module")
def tiny() -> MaskedAutoencoder:
    return mae_from_config(TINY, seed=0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- configs and layout ------------------------------------------------------------------------


def test_registry_returns_copies_and_rejects_unknown_names():
    """get_mae_config copies with overrides; an unknown name raises CaGError listing valid names."""
    assert list_mae_configs() == ["base", "large", "huge"]
    c = get_mae_config("large", img_size=448)
    assert c.img_size == 448 and MAE_CONFIGS["large"].img_size == 224
    with pytest.raises(CaGError, match=r"Unknown MAE config 'giant'.*base.*large.*huge"):
        get_mae_config("giant")


def test_large_layout_matches_official():
    """MAE-Large has the official keys and shapes: 398 tensors, 329,541,888 parameters."""
    shapes = meta_state_shapes("large")
    assert shapes == official_layout(MAE_CONFIGS["large"])
    assert len(shapes) == 398
    assert numel(shapes) == 329_541_888


@pytest.mark.parametrize(("name", "tensors", "params"), [("base", 254, 111_907_840), ("huge", 494, 657_074_508)])
def test_base_and_huge_layouts_match_official(name, tensors, params):
    """MAE-Base and MAE-Huge (patch 14) have the official keys, shapes and counts."""
    shapes = meta_state_shapes(name)
    assert shapes == official_layout(MAE_CONFIGS[name])
    assert (len(shapes), numel(shapes)) == (tensors, params)


def test_normalization_buffers_stay_out_of_state_dict(tiny):
    """ImageNet mean/std are buffers that move with the model but are not saved."""
    assert set(tiny.state_dict()) == set(official_layout(TINY))
    assert {"pixel_mean", "pixel_std"} <= {name for name, _ in tiny.named_buffers()}


def test_pos_embed_equals_official_numpy_formula():
    """Position tables equal facebookresearch/mae get_2d_sincos_pos_embed (cls row zero)."""
    np = pytest.importorskip("numpy")

    def one_axis(dim, pos):  # util/pos_embed.py, verbatim in numpy
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    dim, g = 64, 5
    grid = np.stack(np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32)))
    emb = np.concatenate([one_axis(dim // 2, grid[0]), one_axis(dim // 2, grid[1])], axis=1)
    emb = np.concatenate([np.zeros([1, dim]), emb])
    torch.testing.assert_close(sincos_pos_embed(dim, g), torch.from_numpy(emb).float())


def test_detect_config_from_shapes():
    """Patch size, width and depth pick the registered config; an unregistered MAE asks for config=."""
    with torch.device("meta"):
        state = MaskedAutoencoder(get_mae_config("huge")).state_dict()
    assert detect_config(state)[1] == "huge"
    with pytest.raises(WeightsError, match="pass config="):
        detect_config(mae_from_config(TINY, seed=0).state_dict(), "tiny.pth")


# -- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["pth_model", "safetensors_plain", "save_mae"])
def test_official_layout_file_loads_bit_exact(tmp_path, tiny, form):
    """A state dict in the official layout loads strictly and reproduces outputs bit for bit."""
    if form == "pth_model":
        path, config = tmp_path / "mae_visualize_tiny.pth", TINY
        torch.save({"model": tiny.state_dict()}, path)
    elif form == "safetensors_plain":
        path, config = tmp_path / "mae.safetensors", TINY
        save_file(tiny.state_dict(), path)
    else:
        path, config = tmp_path / "mae.safetensors", None  # config comes from the metadata
        save_mae(tiny, path)
    loaded = load_mae(path, config)
    assert loaded.config == TINY and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 32, 32, generator=gen(1))
    assert torch.equal(loaded.reconstruct(x, generator=gen(2)), tiny.reconstruct(x, generator=gen(2)))


def test_training_checkpoint_with_args_loads_and_norm_pix_args_refused(tmp_path, tiny):
    """A checkpoint with an argparse `args` entry loads; one whose args say norm_pix_loss is refused."""
    ok = tmp_path / "checkpoint-1.pth"
    torch.save({"model": tiny.state_dict(), "args": argparse.Namespace(norm_pix_loss=False), "epoch": 1}, ok)
    assert load_mae(ok, TINY).config_name == "custom"
    bad = tmp_path / "checkpoint-2.pth"
    torch.save({"model": tiny.state_dict(), "args": argparse.Namespace(norm_pix_loss=True)}, bad)
    with pytest.raises(WeightsError, match="per-patch-normalized"):
        load_mae(bad, TINY)


def test_misfit_state_dict_names_missing_unexpected_and_shapes(tmp_path, tiny):
    """A state dict that does not fit names missing and unexpected keys and wrong shapes."""
    sd = dict(tiny.state_dict())
    sd["decoder_head.weight"] = sd.pop("decoder_pred.weight")
    sd["norm.bias"] = torch.zeros(7)
    path = tmp_path / "mae.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(WeightsError) as err:
        load_mae(path, TINY)
    message = str(err.value)
    assert "missing keys: decoder_pred.weight" in message
    assert "unexpected keys: decoder_head.weight" in message
    assert "norm.bias (expected (32,), found (7,))" in message


def test_encoder_only_checkpoint_refused(tmp_path, tiny):
    """mae_pretrain_* (no decoder) is refused, naming the mae_visualize_* files to use."""
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": {k: v for k, v in tiny.state_dict().items() if not k.startswith("decoder_")}}, path)
    with pytest.raises(WeightsError, match=r"only an MAE encoder.*mae_visualize_vit_large\.pth"):
        load_mae(path, TINY)


def test_full_checkpoint_refused_by_name(tmp_path, tiny):
    """A *_full checkpoint (norm_pix_loss) is refused before reading it."""
    path = tmp_path / "mae_pretrain_vit_large_full.pth"
    torch.save({"model": tiny.state_dict()}, path)
    with pytest.raises(WeightsError, match="per-patch-normalized pixels"):
        load_mae(path, TINY)


def test_loaded_in_inference_mode_still_trains_the_image(tmp_path, tiny):
    """A model loaded inside inference_mode() gives input gradients under inference_mode(False)."""
    path = tmp_path / "mae.safetensors"
    save_mae(tiny, path)
    with torch.inference_mode():
        model = load_mae(path)
        image = torch.rand(1, 3, 24, 40)
    with torch.inference_mode(False), torch.enable_grad():
        x = image.clone().requires_grad_(True)
        model.reconstruct(x, generator=gen(0)).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# -- reconstruct -------------------------------------------------------------------------------


def test_reconstruct_shape_and_range(tiny):
    """Any input size comes back at img_size, in [0, 1]."""
    out = tiny.reconstruct(torch.rand(3, 3, 20, 50), generator=gen(0))
    assert out.shape == (3, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_output_different_seeds_or_steps_differ(tiny):
    """Same generator seed -> same result; another seed or the next step -> a different mask."""
    x = torch.rand(2, 3, 32, 32, generator=gen(0))
    assert torch.equal(tiny.reconstruct(x, generator=gen(5)), tiny.reconstruct(x, generator=gen(5)))
    assert not torch.equal(tiny.reconstruct(x, generator=gen(5)), tiny.reconstruct(x, generator=gen(6)))
    g = gen(5)
    first, second = tiny.sample_noise(2, g), tiny.sample_noise(2, g)
    assert not torch.equal(mask_from_noise(first, 0.75), mask_from_noise(second, 0.75))
    assert mask_from_noise(first, 0.75).sum(1).tolist() == [12.0, 12.0]  # 16 patches, 4 kept


def test_encoder_sees_only_visible_patches(tiny):
    """With mask_ratio 0.75 the encoder gets the cls token plus a quarter of the patches."""
    seen = []
    handle = tiny.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    try:
        tiny.reconstruct(torch.rand(2, 3, 32, 32), generator=gen(0))
    finally:
        handle.remove()
    assert seen == [torch.Size([2, 1 + 4, 32])]


def test_mask_ratio_zero_with_paste_gives_input_back(tiny):
    """mask_ratio=0 + paste_visible returns the (resized) input."""
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(tiny.reconstruct(x, mask_ratio=0.0, paste_visible=True), x)
    y = torch.rand(1, 3, 48, 40)
    resized = F.interpolate(y, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(tiny.reconstruct(y, mask_ratio=0.0, paste_visible=True), resized)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_mask_ratio_out_of_range_rejected(tiny, ratio):
    """mask_ratio outside [0, 1) raises CaGError."""
    with pytest.raises(CaGError, match=r"mask_ratio must be in \[0, 1\)"):
        tiny.reconstruct(torch.rand(1, 3, 32, 32), mask_ratio=ratio)


def test_gradient_reaches_input_only_through_visible_patches(tiny):
    """The input gradient is nonzero on visible patches and exactly zero on masked ones."""
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    noise = tiny.sample_noise(1, gen(3))
    tiny.reconstruct(x, noise=noise).square().sum().backward()
    per_patch = tiny.patchify(x.grad).abs().sum(-1)[0]
    masked = mask_from_noise(noise, 0.75)[0].bool()
    assert (per_patch[~masked] > 0).all()
    assert (per_patch[masked] == 0).all()


def test_batch_equals_per_image(tiny):
    """Reconstructing a batch equals reconstructing each image with its own row of noise."""
    x = torch.rand(3, 3, 32, 32, generator=gen(0))
    noise = tiny.sample_noise(3, gen(1))
    batch = tiny.reconstruct(x, noise=noise, paste_visible=True)
    single = torch.cat([tiny.reconstruct(x[i : i + 1], noise=noise[i : i + 1], paste_visible=True) for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


def test_bf16_autocast_runs_close_to_fp32(tiny):
    """Under CPU bf16 autocast the result keeps the input dtype and stays close to fp32."""
    x = torch.rand(2, 3, 32, 32)
    ref = tiny.reconstruct(x, generator=gen(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny.reconstruct(x, generator=gen(0))
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05


def test_cpu_half_precision_attention_runs_in_fp32():
    """On CPUs, bf16 attention (the MAE under bf16 autocast) is computed in fp32: closer to the exact
    result than PyTorch's bf16 kernel, same dtype out, and gradients reach bf16 inputs."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 50, 32, generator=g).bfloat16().requires_grad_(True) for _ in range(3))
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
        native = F.scaled_dot_product_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert (out.double() - exact).abs().mean() < 0.8 * (native.double() - exact).abs().mean()
    out.float().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and q.grad.abs().sum() > 0
    fp32 = torch.rand(1, 2, 5, 8)
    assert torch.equal(attention(fp32, fp32, fp32), F.scaled_dot_product_attention(fp32, fp32, fp32))
