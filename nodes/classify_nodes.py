"""CaG Classify: what a classifier sees in images (top-k classes, and p(target) for a target)."""

from __future__ import annotations

from ..cag_core.classify import classify
from ..cag_core.errors import CaGError
from .common import CATEGORY, CLASSIFIER, first_failure, validation_result
from .generation_nodes import check_target_grammar
from .images import comfy_to_engine

MAX_TOP_K = 20


def check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise CaGError(f"top_k must be a whole number between 1 and {MAX_TOP_K}, got {top_k!r}.")


class CaGClassify:
    DESCRIPTION = (
        "Classifies images with a CaG classifier (or ensemble, whose probabilities are the weighted mean of its "
        "members'): the top-k classes of each image with their probabilities, and p(target) when a target is "
        "given. Use it to check a generated or edited image. The report is shown on the node."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "FLOAT")
    RETURN_NAMES = ("report", "p_target")
    OUTPUT_TOOLTIPS = (
        "Per image: the top-k classes as 'probability  class' lines, and p(target) when a target is given.",
        "p(target) averaged over the batch; 0.0 when target_text is empty. For a mix 'tabby:0.7 | tiger cat:0.3' "
        "it is 0.7 p(tabby) + 0.3 p(tiger cat); negative weights are left out.",
    )
    OUTPUT_NODE = True  # runs (and shows its report) even when nothing uses its outputs
    FUNCTION = "classify_images"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images to classify (any size; grayscale and RGBA are fine)."}),
                "classifier": (CLASSIFIER, {"tooltip": "The classifier or ensemble to ask."}),
                "top_k": ("INT", {"default": 5, "min": 1, "max": MAX_TOP_K,
                                  "tooltip": "How many of the most likely classes to list per image "
                                  "(all of them when the classifier has fewer)."}),
            },
            "optional": {
                "target_text": ("STRING", {
                    "multiline": True,
                    "default": "",
                    "tooltip": "Optional: the class to measure, as in CaG Optimize (a name, an index, or a mix "
                    "'tabby:0.7 | tiger cat:0.3'), one line per image, cycled over the batch. Empty = no target.",
                }),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, top_k, target_text=""):
        # Linked inputs arrive as None: only the values known now are checked.
        results = [validation_result(lambda: check_top_k(top_k))] if top_k is not None else []
        if isinstance(target_text, str) and target_text.strip():
            results.append(validation_result(lambda: check_target_grammar(target_text)))
        return first_failure(*results)

    def classify_images(self, image, classifier, top_k: int, target_text: str = ""):
        check_top_k(top_k)
        images = comfy_to_engine(image)
        target = target_text if target_text and target_text.strip() else None
        result = classify(classifier, images, top_k=top_k, target=target)
        report = result.report()
        p_target = float(result.p_target.mean()) if target is not None else 0.0
        return {"ui": {"text": [report]}, "result": (report, p_target)}


NODE_CLASS_MAPPINGS = {"CaGClassify": CaGClassify}
NODE_DISPLAY_NAME_MAPPINGS = {"CaGClassify": "CaG Classify"}
