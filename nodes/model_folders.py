"""The pack's model folders: registration with ComfyUI, listing, and confined path resolution.

ComfyUI already owns the folder key "classifiers" with an extension filter that hides every file
that has an extension, so the pack uses its own keys. Registration merges with whatever
extra_model_paths.yaml put under those keys (it runs before custom nodes are imported), and the
paths a user gave under core's "classifiers" key are searched too, without touching that key.

A file name in a workflow is untrusted input (workflows are shared as files and PNGs), so
`resolve_model_file` only returns files that really lie inside a registered folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cag_core.errors import CaGError

# pack folder key -> sub-folder of ComfyUI/models
MODEL_FOLDERS = {
    "cag_classifiers": "classifiers",
    "cag_mae": "mae",
    "cag_clip": "cag_clip",
}
WEIGHT_EXTENSIONS = frozenset({".safetensors", ".pth", ".pt", ".bin"})
# Core's key whose extra paths (from extra_model_paths.yaml) also hold classifiers.
CORE_CLASSIFIER_KEY = "classifiers"
# Small models shipped with the pack (e.g. models/mae/cag_tiny_mae_skimage.safetensors).
BUNDLED_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def register_model_folders() -> None:
    """Add the pack's folder keys to folder_paths; keep paths that are already registered.

    Search order: the user's extra_model_paths.yaml entries, ComfyUI/models/<sub>, then the
    pack's own models/<sub> (small bundled models).
    """
    import folder_paths

    registry = folder_paths.folder_names_and_paths
    for key, subdir in MODEL_FOLDERS.items():
        paths, extensions = registry.get(key, ([], set()))
        paths = list(paths)
        if key == "cag_classifiers" and CORE_CLASSIFIER_KEY in registry:
            paths += [p for p in registry[CORE_CLASSIFIER_KEY][0] if p not in paths]
        bundled = BUNDLED_MODELS_DIR / subdir
        defaults = [os.path.join(folder_paths.models_dir, subdir)] + ([str(bundled)] if bundled.is_dir() else [])
        # After the user's own entries: a file they placed elsewhere wins a name clash.
        paths += [d for d in defaults if d not in paths]
        # An empty set would mean "every file" (what add_model_folder_path gives a new key).
        registry[key] = (paths, set(extensions) | WEIGHT_EXTENSIONS)


def folder_paths_for(key: str) -> list[str]:
    import folder_paths

    return folder_paths.get_folder_paths(key)


def list_model_files(key: str) -> list[str]:
    """Relative names of the weight files under a pack folder key (sorted; cached by ComfyUI)."""
    import folder_paths

    return folder_paths.get_filename_list(key)


def _is_inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def check_relative_name(name: str, key: str) -> str:
    """The name with '/' separators, or CaGError if it could leave the folder."""
    if not isinstance(name, str) or not name.strip():
        raise CaGError(f"No file chosen for '{key}': pick a file from the list.")
    normalized = name.replace("\\", "/")
    if os.path.isabs(name) or normalized.startswith("/") or os.path.splitdrive(name)[0]:
        raise CaGError(
            f"Model file '{name}' is an absolute path; only names inside the {key} folders are allowed "
            f"({', '.join(folder_paths_for(key))})."
        )
    if ".." in normalized.split("/"):
        raise CaGError(f"Model file '{name}' contains '..'; only names inside the {key} folders are allowed.")
    extension = os.path.splitext(normalized)[1].lower()
    if extension not in WEIGHT_EXTENSIONS:
        raise CaGError(
            f"Model file '{name}' has extension '{extension}'; allowed: {', '.join(sorted(WEIGHT_EXTENSIONS))}."
        )
    return normalized


def resolve_model_file(key: str, name: str) -> str:
    """Real path of `name` in the folders of `key`; refuses anything that resolves outside them.

    Refused: absolute paths, '..' components, other extensions, and symlinks whose target is not
    inside one of the key's registered folders (to use a model stored elsewhere, add that folder
    to extra_model_paths.yaml under the same key).
    """
    relative = check_relative_name(name, key)
    folders = folder_paths_for(key)
    real_folders = [os.path.realpath(folder) for folder in folders]
    for folder in folders:
        candidate = os.path.join(folder, *relative.split("/"))
        if not os.path.isfile(candidate):
            continue
        real = os.path.realpath(candidate)
        if not any(_is_inside(real, real_folder) for real_folder in real_folders):
            raise CaGError(
                f"Model file '{name}' is a link to '{real}', outside the {key} folders; move the file into "
                f"{folder}, or add its folder to extra_model_paths.yaml under '{key}'."
            )
        return real
    available = list_model_files(key)
    shown = ", ".join(available[:10]) + (f", ... ({len(available)} in all)" if len(available) > 10 else "")
    raise CaGError(
        f"Model file '{name}' was not found in {', '.join(folders)}. "
        + (f"Available: {shown}." if available else "That folder has no weight files yet: put one there.")
    )
