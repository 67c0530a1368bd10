"""The Masked Autoencoder loader node."""

from __future__ import annotations

from ..cag_core.mae import MAE_CONFIGS, VISUALIZE_FILES, load_mae
from . import model_cache
from .common import CATEGORY, MAE
from .devices import AUTO, device_choices, move_module, resolve_device
from .model_cache import file_stamp
from .model_folders import list_model_files, resolve_model_file

SIZE_AUTO = "auto"


class CaGLoadMAE:
    DESCRIPTION = (
        "Loads a Masked Autoencoder from ComfyUI/models/mae. Every optimization step masks and reconstructs "
        "the image with it, which keeps the classifier's gradient on natural-image structure. Use the "
        f"facebookresearch/mae visualize checkpoints: {', '.join(VISUALIZE_FILES)}."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MAE,)
    RETURN_NAMES = ("mae",)
    OUTPUT_TOOLTIPS = ("The MAE; connect it to CaG Optimize's optional mae input.",)
    FUNCTION = "load_mae"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mae_file": (list_model_files("cag_mae"), {
                    "tooltip": "An MAE checkpoint in models/mae, e.g. mae_visualize_vit_large.pth "
                    "(the mae_pretrain_* and *_full files cannot reconstruct and are refused).",
                }),
                "size": ([SIZE_AUTO] + list(MAE_CONFIGS), {
                    "default": SIZE_AUTO,
                    "tooltip": "Architecture; auto detects base/large/huge from the file.",
                }),
                "device": (device_choices(), {
                    "default": AUTO,
                    "tooltip": "Where the MAE runs; CaG Optimize moves it to the classifier's device if they differ.",
                }),
            }
        }

    def load_mae(self, mae_file: str, size: str, device: str):
        path = resolve_model_file("cag_mae", mae_file)
        target = resolve_device(device)
        config = None if size == SIZE_AUTO else size

        def load():
            return move_module(load_mae(path, config), target)

        return (model_cache.MAES.get_or_load(("mae", file_stamp(path), size, str(target)), load),)


NODE_CLASS_MAPPINGS = {"CaGLoadMAE": CaGLoadMAE}
NODE_DISPLAY_NAME_MAPPINGS = {"CaGLoadMAE": "CaG Load MAE"}
