"""ComfyUI nodes of comfyui-cag: thin wrappers that convert ComfyUI values and call cag_core.

This package is the only place that imports ComfyUI modules (folder_paths, comfy.*, server), and
it imports them inside functions, so the node classes can be imported and tested without ComfyUI.
"""

from .dependencies import check_dependencies

check_dependencies()

from . import classifier_nodes, classify_nodes, generation_nodes, mae_nodes  # noqa: E402  (after the dependency check)
from .example_inputs import install_example_inputs  # noqa: E402
from .model_folders import register_model_folders  # noqa: E402

_MODULES = (classifier_nodes, mae_nodes, generation_nodes, classify_nodes)

NODE_CLASS_MAPPINGS = {key: cls for module in _MODULES for key, cls in module.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {
    key: name for module in _MODULES for key, name in module.NODE_DISPLAY_NAME_MAPPINGS.items()
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "install_example_inputs", "register_model_folders"]
