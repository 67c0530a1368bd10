"""comfyui-cag: Classifier as Generator (Wang & Torr, arXiv 2211.14794) for ComfyUI.

ComfyUI imports this file when it loads the pack. It must never break ComfyUI's startup: if a
dependency is missing, it logs one message saying what to install and registers no nodes.
Imported outside ComfyUI (e.g. by pytest collecting the repository), it registers nothing.
"""

import importlib.util
import logging
import sys

WEB_DIRECTORY = "./web"
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}


def _inside_comfyui() -> bool:
    # ComfyUI has imported folder_paths long before it loads custom nodes.
    return "folder_paths" in sys.modules or importlib.util.find_spec("folder_paths") is not None


if _inside_comfyui():
    try:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, install_example_inputs, register_model_folders

        register_model_folders()
        install_example_inputs()  # the example workflows' start photos; never fails the load
    except ImportError as exc:
        # Only a missing/broken dependency is caught; a bug in the pack should show its traceback.
        logging.getLogger(__name__).error("comfyui-cag: nodes disabled, %s", exc)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
