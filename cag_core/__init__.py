"""comfyui-cag engine: classifiers as image generators (Wang & Torr, arXiv 2211.14794).

Plain torch + timm + open_clip + safetensors + einops. Nothing here imports ComfyUI, so the same
engine serves the nodes, the command line (`python -m cag_core`) and the tests.
"""

from .classifier import Classifier, Ensemble, as_ensemble, combine
from .errors import CaGError, NonFiniteLossError, WeightsError

__all__ = ["Classifier", "Ensemble", "as_ensemble", "combine", "CaGError", "NonFiniteLossError", "WeightsError"]
