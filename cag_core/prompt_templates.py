"""Prompt templates and contrast prompts for CLIP text classifiers (data only).

Templates: each class prompt is written into every template and the text embeddings are averaged
("prompt ensembling", Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", Sec. 3.1.4; the same pattern as open_clip's `zero_shot_metadata.py` /
`zero_shot_classifier.py`). Averaging over a few phrasings makes the class direction depend less
on one wording. We keep a short generic set instead of the 80 OpenAI ImageNet templates: those
were tuned for recognising ImageNet photos, cost 80 text-encoder passes per class, and several
("a bad photo of", "a pixelated photo of") would pull generated images toward bad photos.

Contrast prompts: the classifier's classes are the user's prompts, the negative prompts, and
these generic "anything else" classes. They exist because the engine's loss is a cross-entropy
over the classes: with a single class, softmax is identically 1, so the loss is constant and its
gradient is zero -- the image would never change. Generic contrast classes give the softmax
something to push probability away from, so the gradient points from "a generic image" toward
"the prompt". They are phrased to read naturally inside the templates above ("a photo of a
texture.").
"""

from __future__ import annotations

# "{}" is replaced by the class prompt. The bare "{}" keeps the user's own wording in the average.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}.",
    "a picture of {}.",
    "an illustration of {}.",
    "a rendering of {}.",
    "a close-up photo of {}.",
)

# Generic classes every text classifier gets besides the user's prompts (see module docstring).
DEFAULT_CONTRAST: tuple[str, ...] = (
    "an image",
    "an object",
    "a scene",
    "a texture",
    "a pattern",
    "noise",
    "a blurry image",
    "random colors",
)
