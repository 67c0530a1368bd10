"""CLIP as a "generalized classifier": text prompts become the classes (CaG paper, Sec. text-to-image).

The text embeddings of the prompts are the weights of a linear classifying layer on top of the
frozen CLIP image encoder:

    logits = logit_scale * normalize(visual(image)) @ W,    W[:, c] = text embedding of class c

so the engine optimizes an image toward a prompt exactly as it optimizes toward an ImageNet class.

Default objective, and why: the classes are the user's prompts, their negative prompts, and a few
generic contrast prompts (`prompt_templates.DEFAULT_CONTRAST`), and the engine's usual
cross-entropy is applied. Softmax over these classes rewards moving *toward* the prompt and *away
from* generic images, and negative prompts plug into the same soft-label target with negative
weights, so text-to-image reuses the ImageNet loss path unchanged. Maximizing the raw cosine
similarity to the prompt would also work, but needs a second loss path in the engine. With a single
class and no contrast, cross-entropy would have no gradient at all (softmax over one class is
constant), which is why contrast prompts are on by default.

Public API:
    parse_prompts(text) -> [(prompt, weight), ...]
    build_text_head(model, tokenizer, prompts, templates, device, batch_size) -> Tensor[D, C]
    ClipHead(visual, text_weights, logit_scale)
    load_clip(model_name, pretrained, ...) -> (model, tokenizer, preprocess_cfg)
    classifier_from_clip(model, tokenizer, prompts_text, ...) -> Classifier
    text_classifier(model_name, pretrained, prompts_text, ...) -> Classifier
    list_clip_models() -> ["ViT-B-32 / openai", ...]
    clear_caches()
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .classifier import Classifier
from .errors import CaGError, WeightsError, describe_key_mismatch
from .prompt_templates import DEFAULT_CONTRAST, DEFAULT_TEMPLATES
from .weights import load_file

# Where the error messages tell users to put a CLIP checkpoint they downloaded by hand. The node
# layer registers this folder; keep the two in sync.
CHECKPOINT_FOLDER_HINT = "ComfyUI/models/cag_clip"

# CLIP's own normalization (OpenAI, also used by the LAION/DataComp open_clip models), used when a
# model carries no preprocess config. Not ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225).
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)

_WEIGHT_RE = re.compile(r"^(?P<text>.*?)\s*:\s*(?P<weight>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Prompt text
# --------------------------------------------------------------------------------------------


def parse_prompts(text: str) -> list[tuple[str, float]]:
    """'a red fox:1.0 | snow:0.3' -> [('a red fox', 1.0), ('snow', 0.3)].

    Entries are separated by '|' or new lines. A trailing ':number' is the entry's weight (default
    1.0); any other colon stays in the prompt ('photo: a fox' is one prompt; write 'at 12:30:1' if a
    prompt itself ends in ':number').
    """
    if not isinstance(text, str):
        raise CaGError(f"Prompts must be text, got {type(text).__name__}.")
    entries: list[tuple[str, float]] = []
    for raw in re.split(r"[|\n]", text):
        raw = raw.strip()
        if not raw:
            continue  # tolerate 'a | | b' and trailing separators
        match = _WEIGHT_RE.match(raw)
        prompt, weight = (match["text"].strip(), float(match["weight"])) if match else (raw, 1.0)
        if not prompt:
            raise CaGError(f"Prompt entry '{raw}' has a weight but no text; write it as 'some text:{weight:g}'.")
        if not math.isfinite(weight):
            raise CaGError(f"Prompt '{prompt}' has weight {weight}; weights must be finite numbers.")
        entries.append((prompt, weight))
    if not entries:
        raise CaGError(f"The text classifier got an empty prompt ({text!r}); write at least one prompt, e.g. 'a red fox'.")
    return entries


def _class_list(
    prompts_text: str, negatives_text: str, contrast: Sequence[str]
) -> tuple[list[str], list[tuple[str, float]]]:
    """(class names, target entries) for prompts + negatives + contrast prompts."""
    targets = list(parse_prompts(prompts_text))
    if negatives_text and negatives_text.strip():
        # A negative prompt is penalized whatever sign the user wrote; its default weight is -1.
        targets += [(p, -abs(w)) for p, w in parse_prompts(negatives_text)]
    names = [p for p, _ in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CaGError(f"Prompt(s) {duplicates} appear more than once in the prompts/negatives; give each once with one weight.")
    if not any(w > 0 for _, w in targets):
        raise CaGError("The text classifier needs at least one prompt with a positive weight to generate toward.")
    # Contrast prompts that repeat a user prompt would split that class in two: drop them.
    classes = names + [c for c in dict.fromkeys(contrast) if c not in names]
    if len(classes) < 2:
        raise CaGError(
            "A text classifier with one class has no gradient (softmax over one class is constant); "
            "add a negative prompt or keep the default contrast prompts."
        )
    return classes, targets


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    templates = tuple(templates)
    if not templates:
        raise CaGError("The template list is empty; use at least '{}'.")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise CaGError(f"Template {t!r} must contain '{{}}' exactly once (where the prompt goes), e.g. 'a photo of {{}}.'.")
        try:
            t.format("x")
        except (IndexError, KeyError, ValueError) as exc:
            raise CaGError(f"Template {t!r} is not a valid format string ({exc}); write literal braces as '{{{{' '}}}}'.") from exc
    return templates


# --------------------------------------------------------------------------------------------
# Text head (zero-shot classifier weights)
# --------------------------------------------------------------------------------------------


def _batched(items: Sequence[str], n: int):
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def build_text_head(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: str | torch.device | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Unit-norm class embeddings as classifier weights, [D, C] (open_clip's zero-shot recipe).

    Each template filled with the prompt is embedded and L2-normalized, the embeddings of one
    class are averaged, and the mean is normalized again. `batch_size` counts texts per
    text-encoder pass.
    """
    templates = _check_templates(templates)
    if device is None:
        device = next(model.parameters()).device
    texts = [t.format(p) for p in prompts for t in templates]
    with torch.no_grad():
        chunks = [model.encode_text(tokenizer(batch).to(device), normalize=True).float() for batch in _batched(texts, batch_size)]
    per_template = torch.cat(chunks).reshape(len(prompts), len(templates), -1)
    return F.normalize(per_template.mean(dim=1), dim=-1).T.contiguous()


# model -> OrderedDict[(classes, templates, device), W]. Weak keys: a head lives as long as its
# model, and a new model object (e.g. other weights) can never hit a stale entry.
_HEAD_CACHE: weakref.WeakKeyDictionary[nn.Module, OrderedDict] = weakref.WeakKeyDictionary()
_HEADS_PER_MODEL = 16


def _cached_text_head(model, tokenizer, classes: Sequence[str], templates: tuple[str, ...], device) -> torch.Tensor:
    """build_text_head, computed once per (model, classes, templates, device) in this process."""
    key = (tuple(classes), templates, str(device))
    heads = _HEAD_CACHE.setdefault(model, OrderedDict())
    if key in heads:
        heads.move_to_end(key)
        return heads[key]
    head = build_text_head(model, tokenizer, classes, templates, device)
    heads[key] = head
    if len(heads) > _HEADS_PER_MODEL:
        heads.popitem(last=False)
    return head


class ClipHead(nn.Module):
    """CLIP image encoder + fixed text weights: logits = logit_scale * normalize(visual(x)) @ W.

    SigLIP's logit_bias is the same for every class, so it cancels in softmax and is left out.
    Exposes the timm-style `forward_features` / `forward_head(pre_logits=...)` pair, so the engine
    gets both logits and the normalized image embedding (used by the diversity loss).
    """

    def __init__(self, visual: nn.Module, text_weights: torch.Tensor, logit_scale: torch.Tensor | float):
        super().__init__()
        self.visual = visual
        # Buffers, not parameters: they follow .to(device) and never receive gradients.
        self.register_buffer("text_weights", text_weights.detach().clone(), persistent=False)
        self.register_buffer("logit_scale", torch.as_tensor(logit_scale, dtype=torch.float32).detach().clone().reshape(()), persistent=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features = self.visual(x)
        if isinstance(features, (tuple, list)):  # CoCa's visual tower returns (pooled, tokens)
            features = features[0]
        return F.normalize(features, dim=-1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return features
        return self.logit_scale.to(features.dtype) * features @ self.text_weights.to(features.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------
# Classifier from an already-built CLIP model
# --------------------------------------------------------------------------------------------


def _make_autograd_safe(model: nn.Module) -> None:
    """Replace inference-mode parameters/buffers with ordinary copies (same values), in place.

    A model built inside `torch.inference_mode()` (ComfyUI runs nodes in it) holds inference
    tensors, which autograd refuses to save for backward; the engine needs the gradient w.r.t. the
    image through these weights.
    """
    with torch.inference_mode(False):
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None and p.is_inference():
                    module._parameters[name] = nn.Parameter(p.clone(), requires_grad=False)
            for name, b in list(module._buffers.items()):
                if b is not None and b.is_inference():
                    module._buffers[name] = b.clone()


def _preprocess(model: nn.Module, preprocess_cfg: dict[str, Any] | None) -> tuple[tuple[int, int], tuple, tuple, str]:
    """(input_size, mean, std, interpolation) from open_clip's preprocess config, CLIP defaults otherwise."""
    import open_clip

    cfg = dict(open_clip.get_model_preprocess_cfg(model) if preprocess_cfg is None else preprocess_cfg)
    size = cfg.get("size") or getattr(getattr(model, "visual", None), "image_size", None) or 224
    size = (size, size) if isinstance(size, int) else tuple(size)
    mean = tuple(cfg.get("mean") or OPENAI_DATASET_MEAN)
    std = tuple(cfg.get("std") or OPENAI_DATASET_STD)
    return size, mean, std, cfg.get("interpolation") or "bicubic"


def classifier_from_clip(
    model: nn.Module,
    tokenizer,
    prompts_text: str,
    negatives_text: str = "",
    templates: Sequence[str] | None = None,
    contrast: Sequence[str] | None = None,
    *,
    preprocess_cfg: dict[str, Any] | None = None,
    name: str = "CLIP",
    device: str | torch.device | None = None,
) -> Classifier:
    """A `Classifier` whose classes are prompts + negatives + contrast prompts of a built CLIP model.

    model: an open_clip CLIP/CustomTextCLIP/CoCa (needs `visual`, `encode_text`, `logit_scale`).
    preprocess_cfg: open_clip preprocess dict (size, mean, std, interpolation); read from the
        model when None. device: where the classifier runs (default: the model's device).
    The returned classifier's `default_target` is the prompt ('a red fox:1 | snow:0.3 | blur:-1'),
    so optimizing with an empty target generates the prompt.
    """
    templates = _check_templates(DEFAULT_TEMPLATES if templates is None else templates)
    contrast = DEFAULT_CONTRAST if contrast is None else tuple(contrast)
    classes, targets = _class_list(prompts_text, negatives_text, contrast)
    input_size, mean, std, interpolation = _preprocess(model, preprocess_cfg)
    # Everything below must be ordinary tensors even when the caller is in inference mode.
    with torch.inference_mode(False):
        _make_autograd_safe(model)
        model.eval().requires_grad_(False)
        model_device = next(model.parameters()).device
        device = torch.device(device) if device is not None else model_device
        text_weights = _cached_text_head(model, tokenizer, classes, templates, model_device)
        head = ClipHead(model.visual, text_weights, model.logit_scale.detach().float().exp())
        classifier = Classifier(
            head,
            input_size=input_size,
            mean=mean,
            std=std,
            class_names=classes,
            name=name,
            interpolation=interpolation,
            default_target=" | ".join(f"{p}:{w:g}" for p, w in targets),
            features_fn=head.forward_features,
            head_fn=head.forward_head,
        )
        return classifier.to(device)


# --------------------------------------------------------------------------------------------
# Building open_clip models: resolve -> load -> build
# --------------------------------------------------------------------------------------------


def list_clip_models() -> list[str]:
    """'ViT-B-32 / openai' style choices for the node's dropdown (open_clip.list_pretrained())."""
    import open_clip

    return [f"{arch} / {tag}" for arch, tag in open_clip.list_pretrained()]


def _resolve(model_name: str, pretrained: str) -> dict[str, Any]:
    """Validate the architecture name and tag; the tag's open_clip config ({} for none)."""
    import open_clip

    if model_name.startswith(("hf-hub:", "local-dir:")):
        return {}
    if model_name not in open_clip.list_models():
        raise CaGError(f"Unknown CLIP model '{model_name}'. Available: {open_clip.list_models()}.")
    if not pretrained:
        return {}
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise CaGError(f"CLIP model '{model_name}' has no pretrained weights '{pretrained}'. Available: {tags}.")
    return open_clip.get_pretrained_cfg(model_name, pretrained)


def _download_hint(model_name: str, pretrained: str, tag_cfg: dict[str, Any]) -> str:
    """Where to get the weights of a tag by hand, and where to put them."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_model.safetensors (or open_clip_pytorch_model.bin)"
        source = f"https://huggingface.co/{repo}/tree/main -> {filename}"
    else:
        source = tag_cfg.get("url") or "the model's release page"
    return (
        f"To work offline, download {source}, put it in {CHECKPOINT_FOLDER_HINT}, and choose it as the "
        f"checkpoint file (keep model '{model_name}' and pretrained '{pretrained}' so architecture and "
        f"preprocessing match)."
    )


def _load_checkpoint_into(model: nn.Module, path: str | os.PathLike, model_name: str) -> None:
    """Load a local open_clip checkpoint through the safe loader, strictly, with readable errors."""
    state = load_file(path)
    filename = Path(path).name
    if any(k.startswith(("vision_model.", "text_model.")) for k in state):
        raise WeightsError(
            f"'{filename}' is a Hugging Face transformers CLIP checkpoint; this loader needs the open_clip "
            f"layout (open_clip_model.safetensors from an open_clip/timm hub repo)."
        )
    # OpenAI checkpoints carry hyperparameters as tensors; open_clip drops them the same way.
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    # logit_scale is a scalar or a [1] tensor depending on the open_clip version that saved it.
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state and isinstance(target, torch.Tensor) and state[key].numel() == target.numel():
            state[key] = state[key].reshape(target.shape)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = str(exc).strip().rstrip(".")
        raise WeightsError(f"'{filename}' does not fit CLIP '{model_name}': {detail}. Choose the model the checkpoint was trained as.") from exc
    if missing or unexpected:
        raise WeightsError(
            f"'{filename}' does not fit CLIP '{model_name}' ({describe_key_mismatch(list(missing), list(unexpected))}). "
            "Choose the model the checkpoint was trained as."
        )


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning():
    """Hide open_clip's 'Model initialized randomly' while we are about to load a checkpoint into it."""
    # open_clip logs through the root logger; the filter is removed again whatever happens.
    log_filter = _DropRandomInitWarning()
    logging.getLogger().addFilter(log_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(log_filter)


def _build(model_name: str, pretrained: str, device: str, checkpoint_path: str | None, cache_dir: str | None):
    """(model, tokenizer, preprocess_cfg), built inside inference_mode(False)."""
    import open_clip

    tag_cfg = _resolve(model_name, pretrained)
    # OpenAI-trained weights need QuickGELU; open_clip only warns when the architecture lacks it.
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    # The tag's normalization applies to its weights even when they come from a local file.
    preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    with torch.inference_mode(False):
        if checkpoint_path:
            with _quiet_random_init_warning():
                model = open_clip.create_model(
                    model_name, pretrained=None, device="cpu", force_quick_gelu=quick_gelu,
                    force_preprocess_cfg=preprocess, cache_dir=cache_dir,
                )
            _load_checkpoint_into(model, checkpoint_path, model_name)
            model = model.to(device)
        elif pretrained or model_name.startswith(("hf-hub:", "local-dir:")):
            try:
                model = open_clip.create_model(
                    model_name, pretrained=pretrained or None, device=device, force_quick_gelu=quick_gelu, cache_dir=cache_dir
                )
            except (RuntimeError, OSError) as exc:
                raise CaGError(
                    f"Could not get the weights of CLIP '{model_name}' / '{pretrained}' ({exc}). open_clip downloads "
                    f"them on first use, which needs internet access. {_download_hint(model_name, pretrained, tag_cfg)}"
                ) from exc
        else:
            raise CaGError(
                f"CLIP '{model_name}' needs weights: choose a pretrained tag "
                f"({open_clip.list_pretrained_tags_by_model(model_name)}) or a local checkpoint file."
            )
        model.eval().requires_grad_(False)
    try:
        tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    except Exception as exc:  # HF tokenizers (SigLIP, some hf-hub models) download their vocabulary
        raise CaGError(f"Could not load the tokenizer of CLIP '{model_name}' ({exc}); it may need a one-time download.") from exc
    return model, tokenizer, open_clip.get_model_preprocess_cfg(model)


@functools.lru_cache(maxsize=1)
def _build_cached(model_name, pretrained, device, checkpoint_path, checkpoint_stamp, cache_dir):
    # One model at a time: changing only the prompts reuses it (and its cached text heads);
    # checkpoint_stamp (mtime, size) makes a replaced file a new entry.
    return _build(model_name, pretrained, device, checkpoint_path, cache_dir)


def load_clip(
    model_name: str,
    pretrained: str = "",
    *,
    device: str | torch.device = "cpu",
    checkpoint_path: str | os.PathLike | None = None,
    cache_dir: str | None = None,
):
    """(model, tokenizer, preprocess_cfg) for an open_clip model, frozen, in eval mode; cached.

    pretrained: an open_clip tag (downloaded into open_clip's cache on first use). checkpoint_path:
    a local open_clip checkpoint (.safetensors preferred) loaded safely instead; `pretrained` may
    still name the tag it came from so QuickGELU and normalization match.
    """
    stamp = None
    if checkpoint_path:
        checkpoint_path = os.fspath(checkpoint_path)
        if not os.path.isfile(checkpoint_path):
            raise WeightsError(f"CLIP checkpoint '{checkpoint_path}' does not exist.")
        st = os.stat(checkpoint_path)
        stamp = (st.st_mtime_ns, st.st_size)
    return _build_cached(model_name, pretrained or "", str(torch.device(device)), checkpoint_path, stamp, cache_dir)


def clear_caches() -> None:
    """Forget the cached CLIP model and text heads (frees their memory once nothing else holds them)."""
    _build_cached.cache_clear()
    _HEAD_CACHE.clear()


def text_classifier(
    model_name: str,
    pretrained: str,
    prompts_text: str,
    negatives_text: str = "",
    templates: Sequence[str] | None = None,
    contrast: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    checkpoint_path: str | os.PathLike | None = None,
    cache_dir: str | None = None,
) -> Classifier:
    """A CLIP text classifier: classes = prompts + negatives + contrast prompts (see module doc)."""
    # Validate the prompts before any (slow) model loading.
    _class_list(prompts_text, negatives_text, DEFAULT_CONTRAST if contrast is None else contrast)
    model, tokenizer, preprocess_cfg = load_clip(
        model_name, pretrained, device=device, checkpoint_path=checkpoint_path, cache_dir=cache_dir
    )
    source = Path(checkpoint_path).name if checkpoint_path else pretrained
    return classifier_from_clip(
        model, tokenizer, prompts_text, negatives_text, templates, contrast,
        preprocess_cfg=preprocess_cfg, name=f"CLIP {model_name} ({source})", device=device,
    )
