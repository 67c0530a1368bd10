"""A stand-in feature extractor for torch-fidelity, so evaluation tests need no Inception download.

Registered through torch-fidelity's own extension point (`register_feature_extractor`) and chosen
with `--feature-extractor cag-test-tiny`. It gives what the metrics ask of an extractor: a small
feature vector for FID/KID/precision-recall ("feat") and class logits for IS ("logits_unbiased").
The features are hand-made image statistics, so clearly different image sets get clearly different
features; the logits are a fixed random projection of them.
"""

from __future__ import annotations

import torch

NAME = "cag-test-tiny"
FEATURE_DIMS = 8
CLASSES = 10


def _feature_extractor_class():
    from torch_fidelity import FeatureExtractorBase

    class TinyFeatures(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            head = torch.randn(FEATURE_DIMS, CLASSES, generator=torch.Generator().manual_seed(0))
            self.register_buffer("head", head)

        @staticmethod
        def get_provided_features_list():
            return "feat", "logits_unbiased"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3, (x.dtype, x.shape)
            x = x.float() / 255
            gray = x.mean(1)
            half = gray.shape[1] // 2
            feat = torch.cat([
                x.mean((2, 3)),  # colour
                x.std((2, 3)),  # contrast per channel
                (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean((1, 2))[:, None],  # horizontal detail
                (gray[:, :half].mean((1, 2)) - gray[:, half:].mean((1, 2)))[:, None],  # top vs bottom
            ], dim=1)
            logits = 20 * (feat - 0.3) @ self.head
            named = {"feat": feat, "logits_unbiased": logits}
            return tuple(named[name] for name in self.features_list)

    return TinyFeatures


def register() -> str:
    """Register the stand-in once per process; returns its name."""
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(NAME, _feature_extractor_class())
    return NAME
