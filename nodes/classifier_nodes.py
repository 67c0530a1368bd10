"""Nodes that make classifiers: image classifiers, CLIP text classifiers, ensembles, class targets."""

from __future__ import annotations

import difflib
import math

from ..cag_core.class_names import imagenet_class_names, resolve_class
from ..cag_core.classifier import combine
from ..cag_core.errors import CaGError
from ..cag_core.efficientnet_lite import EMBEDDED_LITE
from ..cag_core.prompt_templates import DEFAULT_CONTRAST
from ..cag_core.targets import split_images, split_weight
from ..cag_core.text_classifier import (
    _check_templates,  # the engine's own checks, so validation and loading agree
    _class_list,
    list_clip_models,
    parse_prompts,
    text_classifier,
)
from ..cag_core.timm_classifier import (
    check_architecture,
    classifier_from_file,
    embedded_classifier,
    timm_classifier,
)
from . import model_cache
from .common import CATEGORY, CLASSIFIER, DEFAULT_CLASS, first_failure, imagenet_choices, validation_result
from .devices import AUTO, device_choices, resolve_device
from .model_cache import file_stamp
from .model_folders import list_model_files, resolve_model_file

TIMM_SOURCE = "timm: download by name"
NO_CHECKPOINT = "none"
DEFAULT_CLIP = "ViT-B-32 / laion2b_s34b_b79k"
CLIP_SEPARATOR = " / "

DEVICE_TOOLTIP = "Where the model runs. auto = ComfyUI's device (the GPU unless ComfyUI was started with --cpu)."


# --------------------------------------------------------------------------------------------
# Image classifiers


def _load_embedded(source: str, architecture: str, device):
    return ("embedded", source, str(device)), lambda: embedded_classifier(source, device=device)


def _load_timm(source: str, architecture: str, device):
    return ("timm", architecture, str(device)), lambda: timm_classifier(architecture, pretrained=True, device=device)


def _load_file(source: str, architecture: str, device):
    path = resolve_model_file("cag_classifiers", source)
    key = ("file", file_stamp(path), architecture, str(device))
    return key, lambda: classifier_from_file(path, architecture or None, device=device)


def _source_kind(source: str) -> str:
    if source in EMBEDDED_LITE:
        return "embedded"
    return "timm" if source == TIMM_SOURCE else "file"


# source kind -> (cache key, loader) for that kind
_CLASSIFIER_LOADERS = {"embedded": _load_embedded, "timm": _load_timm, "file": _load_file}


class CaGLoadClassifier:
    DESCRIPTION = (
        "Loads an ImageNet image classifier to generate images with. The embedded EfficientNet-Lite models "
        "work offline; files come from ComfyUI/models/classifiers (.safetensors preferred); "
        f"'{TIMM_SOURCE}' downloads pretrained weights through timm on first use."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CLASSIFIER,)
    RETURN_NAMES = ("classifier",)
    OUTPUT_TOOLTIPS = ("The classifier; connect it to CaG Optimize or CaG Combine Classifiers.",)
    FUNCTION = "load_classifier"

    @classmethod
    def source_choices(cls) -> list[str]:
        return list(EMBEDDED_LITE) + list_model_files("cag_classifiers") + [TIMM_SOURCE]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": (cls.source_choices(), {
                    "default": "efficientnet-lite0",
                    "tooltip": "efficientnet-lite0/1/2: embedded, no download. A file: from models/classifiers. "
                    f"'{TIMM_SOURCE}': the timm model named in 'architecture', downloaded by timm.",
                }),
                "architecture": ("STRING", {
                    "default": "",
                    "tooltip": f"timm model name, e.g. resnet50. Needed for '{TIMM_SOURCE}', and for weight files "
                    "that do not record their architecture; leave empty otherwise.",
                }),
                "device": (device_choices(), {"default": AUTO, "tooltip": DEVICE_TOOLTIP}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, source, architecture):
        if source is not None and source not in cls.source_choices():
            files = list_model_files("cag_classifiers")
            return (
                f"Classifier source '{source}' is not available. Choose {', '.join(EMBEDDED_LITE)}, '{TIMM_SOURCE}', "
                f"or a file in models/classifiers ({', '.join(files[:10]) if files else 'none found'})."
            )
        if source is None or architecture is None:  # linked: known only when the graph runs
            return True
        arch = architecture.strip()
        if source == TIMM_SOURCE and not arch:
            return f"Write a timm model name in 'architecture' (e.g. resnet50) when the source is '{TIMM_SOURCE}'."
        if arch and _source_kind(source) != "embedded":
            return validation_result(lambda: check_architecture(arch))
        return True

    def load_classifier(self, source: str, architecture: str, device: str):
        key, load = _CLASSIFIER_LOADERS[_source_kind(source)](source, architecture.strip(), resolve_device(device))
        return (model_cache.CLASSIFIERS.get_or_load(key, load),)


# --------------------------------------------------------------------------------------------
# CLIP text classifier


def parse_clip_choice(choice: str) -> tuple[str, str]:
    """'ViT-B-32 / laion2b_s34b_b79k' -> ('ViT-B-32', 'laion2b_s34b_b79k'); 'ViT-B-32' -> ('ViT-B-32', '')."""
    arch, _, tag = choice.partition(CLIP_SEPARATOR)
    return arch.strip(), tag.strip()


def check_clip_choice(choice: str, has_checkpoint: bool) -> None:
    """CaGError unless open_clip knows the model (and tag), or the hub name is allowed."""
    import open_clip

    arch, tag = parse_clip_choice(choice)
    if arch.startswith("local-dir:"):
        # A folder path from a workflow could point anywhere: checkpoints come from models/cag_clip.
        raise CaGError(f"CLIP model '{choice}': local-dir paths are not accepted; put the weights in models/cag_clip.")
    if arch.startswith("hf-hub:"):
        return
    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=4, cutoff=0.6)
        raise CaGError(f"Unknown CLIP model '{arch}'." + (f" Did you mean: {', '.join(close)}?" if close else ""))
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag and tag not in tags:
        raise CaGError(f"CLIP model '{arch}' has no pretrained weights '{tag}'. Available: {', '.join(tags) or 'none'}.")
    if not tag and not has_checkpoint:
        raise CaGError(f"CLIP model '{arch}' needs weights: pick '{arch}{CLIP_SEPARATOR}<tag>' or a checkpoint file.")


def parse_templates(text: str | None) -> tuple[str, ...] | None:
    """One template per non-empty line; None (the engine's defaults) when empty."""
    lines = tuple(line.strip() for line in (text or "").splitlines() if line.strip())
    return lines or None


def contrast_prompts(enabled: bool) -> tuple[str, ...]:
    """The engine's generic contrast classes, or none."""
    return tuple(DEFAULT_CONTRAST) if enabled else ()


class CaGTextClassifier:
    DESCRIPTION = (
        "Turns a CLIP model into a classifier whose classes are your prompts (text-to-image): the text "
        "embeddings become the weights of the classifying layer. Connect it to CaG Optimize with an empty "
        "target text to generate the prompt."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CLASSIFIER,)
    RETURN_NAMES = ("classifier",)
    OUTPUT_TOOLTIPS = ("A classifier over prompts + negatives + contrast prompts.",)
    FUNCTION = "build_text_classifier"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_model": (list_clip_models(), {
                    "default": DEFAULT_CLIP,
                    "tooltip": "open_clip model / pretrained tag. Weights download on first use unless a checkpoint "
                    "file is chosen; keep the model and tag the checkpoint was trained as.",
                }),
                "checkpoint": ([NO_CHECKPOINT] + list_model_files("cag_clip"), {
                    "default": NO_CHECKPOINT,
                    "tooltip": "A local open_clip checkpoint from models/cag_clip (for offline use); "
                    "'none' = download the tag's weights.",
                }),
                "device": (device_choices(), {"default": AUTO, "tooltip": DEVICE_TOOLTIP}),
                "prompts": ("STRING", {
                    "multiline": True,
                    "default": "a photo of a red fox in the snow",
                    "tooltip": "What to generate. Several prompts: separate with '|' or new lines; "
                    "weights as 'prompt:0.5'.",
                }),
                "contrast": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Add generic contrast prompts as extra classes. Keep on: with a single class the "
                    "classifier has no gradient.",
                }),
            },
            "optional": {
                "negatives": ("STRING", {
                    "multiline": True,
                    "default": "",
                    "tooltip": "Prompts to steer away from ('|' or new lines), e.g. 'blurry | text'.",
                }),
                "templates": ("STRING", {
                    "multiline": True,
                    "default": "",
                    "tooltip": "Prompt templates, one per line, each with '{}' where the prompt goes "
                    "(e.g. 'a photo of {}.'). Empty = the built-in set.",
                }),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, clip_model, checkpoint, prompts, contrast=True, negatives="", templates=""):
        if checkpoint is not None and checkpoint != NO_CHECKPOINT and checkpoint not in list_model_files("cag_clip"):
            return f"CLIP checkpoint '{checkpoint}' is not in models/cag_clip; choose '{NO_CHECKPOINT}' or a file there."
        results = []
        if clip_model is not None:
            results.append(validation_result(lambda: check_clip_choice(clip_model, checkpoint != NO_CHECKPOINT)))
        if isinstance(prompts, str):
            negative_text = negatives if isinstance(negatives, str) else ""
            contrast_classes = contrast_prompts(contrast is not False)
            results.append(validation_result(lambda: _class_list(prompts, negative_text, contrast_classes)))
        if isinstance(templates, str) and parse_templates(templates):
            results.append(validation_result(lambda: _check_templates(parse_templates(templates))))
        return first_failure(*results)

    def build_text_classifier(self, clip_model, checkpoint, device, prompts, contrast, negatives="", templates=""):
        parse_prompts(prompts)  # fail on an empty prompt before any model loading
        check_clip_choice(clip_model, checkpoint != NO_CHECKPOINT)
        arch, tag = parse_clip_choice(clip_model)
        device = resolve_device(device)
        path = None if checkpoint == NO_CHECKPOINT else resolve_model_file("cag_clip", checkpoint)
        template_list = parse_templates(templates)
        key = ("clip", arch, tag, file_stamp(path) if path else None, prompts, negatives, template_list, contrast, str(device))

        def load():
            return text_classifier(
                arch, tag, prompts, negatives or "", templates=template_list, contrast=contrast_prompts(contrast),
                device=device, checkpoint_path=path,
            )

        return (model_cache.TEXT_CLASSIFIERS.get_or_load(key, load),)


# --------------------------------------------------------------------------------------------
# Ensembles and class targets


class CaGCombineClassifiers:
    DESCRIPTION = (
        "Combines 2-4 classifiers over the same classes into an ensemble: the loss is their weighted mean, "
        "which makes images that several networks agree on (less adversarial)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CLASSIFIER,)
    RETURN_NAMES = ("classifier",)
    OUTPUT_TOOLTIPS = ("The ensemble; use it like a single classifier.",)
    FUNCTION = "combine_classifiers"

    @classmethod
    def INPUT_TYPES(cls):
        def weight(n):
            return ("FLOAT", {"default": 1.0, "min": 0.01, "max": 100.0, "step": 0.05,
                              "tooltip": f"Relative weight of classifier {n} in the loss."})

        def member(n):
            return (CLASSIFIER, {"tooltip": f"Classifier {n}; all must have the same classes and device."})

        return {
            "required": {"classifier_1": member(1), "weight_1": weight(1), "classifier_2": member(2), "weight_2": weight(2)},
            "optional": {"classifier_3": member(3), "weight_3": weight(3), "classifier_4": member(4), "weight_4": weight(4)},
        }

    def combine_classifiers(self, classifier_1, weight_1, classifier_2, weight_2,
                            classifier_3=None, weight_3=1.0, classifier_4=None, weight_4=1.0):
        pairs = [(classifier_1, weight_1), (classifier_2, weight_2), (classifier_3, weight_3), (classifier_4, weight_4)]
        pairs = [(c, w) for c, w in pairs if c is not None]
        return (combine(*(c for c, _ in pairs), weights=[w for _, w in pairs]),)


def picker_target(class_name: str, weight: float = 1.0, mix: str = "") -> str:
    """'207: golden retriever' [+ ':0.7'] [+ ' | tabby:0.3']: target text for CaG Optimize."""
    head = class_name if weight == 1 else f"{class_name}:{weight:g}"
    return " | ".join([head] + [e.strip() for e in (mix or "").split("|") if e.strip()])


MIN_PICKER_WEIGHT, MAX_PICKER_WEIGHT = 0.01, 100.0


def check_picker_weight(weight: float) -> None:
    # NaN passes ComfyUI's own min/max check (every comparison with NaN is False).
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and MIN_PICKER_WEIGHT <= weight <= MAX_PICKER_WEIGHT):
        raise CaGError(f"weight must be a number between {MIN_PICKER_WEIGHT:g} and {MAX_PICKER_WEIGHT:g}, got {weight}.")


def check_imagenet_mix(mix: str) -> None:
    """CaGError naming the first entry that is not an ImageNet class (with close matches)."""
    if len(split_images(mix)) > 1:
        raise CaGError(f"mix '{mix}' has several lines; per-image targets go in CaG Optimize's target_text.")
    names = imagenet_class_names()
    for entry in (e for e in mix.split("|") if e.strip()):
        resolve_class(split_weight(entry)[0], names)


class CaGClassPicker:
    DESCRIPTION = (
        "Picks an ImageNet class (searchable list) and optional extra classes to mix in, and outputs the "
        "target text. Connect it to the target_text of every CaG Optimize stage to change the class in one place."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("target",)
    OUTPUT_TOOLTIPS = ("Target text, e.g. '207: golden retriever | tabby:0.3'.",)
    FUNCTION = "pick_class"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "class_name": (imagenet_choices(), {
                    "default": DEFAULT_CLASS, "tooltip": "The ImageNet class to generate; type to search.",
                }),
                "weight": ("FLOAT", {
                    "default": 1.0, "min": MIN_PICKER_WEIGHT, "max": MAX_PICKER_WEIGHT, "step": 0.05,
                    "tooltip": "Weight of this class when mixing with others (weights are normalized).",
                }),
            },
            "optional": {
                "mix": ("STRING", {
                    "default": "",
                    "tooltip": "More ImageNet classes as 'name:weight' separated by '|', e.g. 'tabby:0.3 | "
                    "tiger cat:0.2'; a negative weight steers away ('dog:-1').",
                }),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, weight=1.0, mix=""):
        results = [validation_result(lambda: check_picker_weight(weight))] if weight is not None else []
        if isinstance(mix, str) and mix.strip():
            results.append(validation_result(lambda: check_imagenet_mix(mix)))
        return first_failure(*results)

    def pick_class(self, class_name: str, weight: float, mix: str = ""):
        check_picker_weight(weight)
        if mix and mix.strip():
            check_imagenet_mix(mix)
        return (picker_target(class_name, weight, mix),)


NODE_CLASS_MAPPINGS = {
    "CaGLoadClassifier": CaGLoadClassifier,
    "CaGTextClassifier": CaGTextClassifier,
    "CaGCombineClassifiers": CaGCombineClassifiers,
    "CaGClassPicker": CaGClassPicker,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CaGLoadClassifier": "CaG Load Classifier",
    "CaGTextClassifier": "CaG Text Classifier (CLIP)",
    "CaGCombineClassifiers": "CaG Combine Classifiers",
    "CaGClassPicker": "CaG ImageNet Class",
}
