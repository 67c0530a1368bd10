"""`Classifier`: a frozen network plus everything needed to feed it correctly.

Every classifier the engine optimizes against -- a timm ImageNet model, a local weights file, or
CLIP with text prompts as classes -- is wrapped in this one interface, so the optimization loop
never needs to know where the logits come from:

    logits, features = classifier.logits_and_features(images01)   # images in [0, 1], any size

Images are resized to the classifier's input size and normalized with its own mean/std inside
the module. The mean/std live in buffers so they move with `.to(device)` and are never rebuilt
in the hot loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .batchnorm_folding import fold_batchnorm
from .errors import CaGError

# (features -> logits) head and (images -> features) body, for models that are not timm models.
FeatureFn = Callable[[torch.Tensor], torch.Tensor]


class Classifier(nn.Module):
    """A frozen classifier that takes images in [0, 1] and returns logits over `class_names`.

    model: maps normalized images [B, 3, H, W] to logits [B, C]. If it is a timm model
        (has `forward_features` and `forward_head`), the pre-logit features are available for
        the diversity loss; otherwise `features_fn`/`head_fn` can split it, or the logits serve
        as features.
    input_size: (H, W) the model was trained at; inputs are resized to it.
    mean, std: per-channel normalization the model expects.
    class_names: one readable name per output, in output order.
    default_target: target text to use when the user gives none (text classifiers set it to
        their prompt).
    channels_last: run the model's convolutions in NHWC layout (weights converted once, inputs
        per call); not bit-identical to the default layout (fp32 rounding, ~1e-6 relative). The
        engine's fp32 CPU step uses NHWC anyway, through `folded_model()` (logits_and_features
        with fast=True); this switch sets the layout of the model itself, e.g. for bf16 or CUDA.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        input_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str],
        name: str,
        interpolation: str = "bicubic",
        default_target: str | None = None,
        features_fn: FeatureFn | None = None,
        head_fn: FeatureFn | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise CaGError(f"Classifier '{name}': mean/std need 3 values, got {mean} / {std}.")
        self.model = model.eval().requires_grad_(False)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.class_names = list(class_names)
        self.name = name
        self.interpolation = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
        self.default_target = default_target
        self._features_fn = features_fn
        self._head_fn = head_fn
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self.channels_last = False
        self._drop_folded()
        if channels_last:
            self.use_channels_last(True)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> "Classifier":
        # Frozen for good: BN running stats and dropout must never switch to training behaviour,
        # whatever a caller does with `.train()`.
        return super().train(False)

    def use_channels_last(self, enabled: bool = True) -> "Classifier":
        """Switch the convolution layout (weights converted in place; values unchanged)."""
        layout = torch.channels_last if enabled else torch.contiguous_format
        with torch.inference_mode(False):
            self.model.to(memory_format=layout)
        self.channels_last = bool(enabled)
        return self

    def _drop_folded(self) -> None:
        # {fast layout is channels_last: folded copy or None}. Set through __dict__, since
        # nn.Module.__setattr__ would register the copies as submodules.
        self.__dict__["_folded"] = {}

    def _apply(self, fn, *args, **kwargs):
        # .to(device / dtype) and friends: the folded copy is rebuilt from the moved model.
        self._drop_folded()
        return super()._apply(fn, *args, **kwargs)

    @property
    def fast_channels_last(self) -> bool:
        """Layout of the fast path: channels_last when asked for, and always on the CPU, where
        oneDNN's NHWC convolutions ran forward+backward 1.2x (ResNet-50) to 1.5x (Lite0, folded)
        faster than NCHW on 2 cores; on CUDA it was not a clear win in bf16 (benchmarks/README.md)."""
        return self.channels_last or self.device.type == "cpu"

    def folded_model(self) -> nn.Module:
        """The model with its eval BatchNorms folded into the convolutions before them (the same
        function up to fp32 rounding, fewer passes over memory; batchnorm_folding.py), in the
        fast path's layout; or the model itself when nothing folds. Built once, checked against
        the model, and kept outside the module tree, so state_dict, parameters and BN hooks see
        only the original."""
        cache = self.__dict__["_folded"]
        layout = self.fast_channels_last
        if layout not in cache:
            dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
            example = torch.rand(2, 3, *self.input_size, generator=torch.Generator().manual_seed(0))
            example = self.prepare(example.to(self.device, dtype), layout)
            with torch.inference_mode(False), torch.autocast(self.device.type, enabled=False):
                folded = fold_batchnorm(self.model, example)
                if folded is not None:
                    folded.to(memory_format=torch.channels_last if layout else torch.contiguous_format)
            cache[layout] = folded
        return cache[layout] if cache[layout] is not None else self.model

    def folded_copies(self) -> list[nn.Module]:
        """The folded copies built so far (one per layout), e.g. to compile them too."""
        return [m for m in self.__dict__["_folded"].values() if m is not None]

    def model_for(self, fast: bool) -> nn.Module:
        """The network `logits_and_features(..., fast=fast)` runs (for hooks)."""
        if fast and not (self._features_fn is not None and self._head_fn is not None):
            return self.folded_model()
        return self.model

    def prepare(self, images01: torch.Tensor, channels_last: bool | None = None) -> torch.Tensor:
        """Resize to the input size and normalize; images [B, 3, H, W] in [0, 1]. The layout is
        `channels_last`, by default the model's."""
        if images01.shape[-2:] != self.input_size:
            images01 = F.interpolate(
                images01, size=self.input_size, mode=self.interpolation, align_corners=False, antialias=False
            )
        x = (images01 - self.mean.to(images01.dtype)) / self.std.to(images01.dtype)
        channels_last = self.channels_last if channels_last is None else channels_last
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def logits_and_features(self, images01: torch.Tensor, *, fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, C], pre-logit features [B, D]) for images in [0, 1].

        fast: run `folded_model()` in the fast layout (the same values up to fp32 rounding);
        callers that hook layers hook `model_for(fast)`."""
        if self._features_fn is not None and self._head_fn is not None:
            features = self._features_fn(self.prepare(images01))
            return self._head_fn(features), features
        model = self.model_for(fast)
        x = self.prepare(images01, self.fast_channels_last if fast and model is not self.model else None)
        if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
            feature_map = model.forward_features(x)
            # Pooling twice is negligible next to the body, and safer than assuming that
            # get_classifier() alone maps pre-logits to logits for every timm family.
            return model.forward_head(feature_map), model.forward_head(feature_map, pre_logits=True)
        logits = model(x)
        return logits, logits

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(images01)[0]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, classes={self.num_classes}"


@dataclass(frozen=True)
class Ensemble:
    """Several classifiers over the same classes; the loss is their weighted mean."""

    members: tuple[Classifier, ...]
    weights: tuple[float, ...]

    def __post_init__(self):
        if not self.members:
            raise CaGError("An ensemble needs at least one classifier.")
        if len(self.weights) != len(self.members):
            raise CaGError(f"An ensemble of {len(self.members)} classifiers got {len(self.weights)} weights.")
        if any(not (w >= 0) for w in self.weights) or sum(self.weights) <= 0:
            raise CaGError(f"Ensemble weights must be non-negative with a positive sum, got {list(self.weights)}.")
        counts = {m.num_classes for m in self.members}
        if len(counts) != 1:
            names = ", ".join(f"{m.name} ({m.num_classes})" for m in self.members)
            raise CaGError(f"Ensemble members must share their classes; class counts differ: {names}.")

    @property
    def class_names(self) -> list[str]:
        return self.members[0].class_names

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @property
    def default_target(self) -> str | None:
        return self.members[0].default_target

    @property
    def name(self) -> str:
        return " + ".join(m.name for m in self.members)


def as_ensemble(classifier: "Classifier | Ensemble | Sequence[Classifier]") -> Ensemble:
    """Normalize one classifier, a list, or an ensemble to an `Ensemble`."""
    if isinstance(classifier, Ensemble):
        return classifier
    if isinstance(classifier, Classifier):
        return Ensemble((classifier,), (1.0,))
    members = tuple(classifier)
    if not all(isinstance(m, Classifier) for m in members):
        raise CaGError(f"Expected classifiers, got {[type(m).__name__ for m in members]}.")
    return Ensemble(members, tuple(1.0 for _ in members))


def combine(*items: "Classifier | Ensemble", weights: Sequence[float] | None = None) -> Ensemble:
    """Join classifiers and ensembles into one flat ensemble (weights scale each item)."""
    weights = list(weights) if weights is not None else [1.0] * len(items)
    if len(weights) != len(items):
        raise CaGError(f"combine() got {len(items)} classifiers but {len(weights)} weights.")
    members: list[Classifier] = []
    member_weights: list[float] = []
    for item, w in zip(items, weights):
        ens = as_ensemble(item)
        members.extend(ens.members)
        member_weights.extend(w * mw for mw in ens.weights)
    return Ensemble(tuple(members), tuple(member_weights))
