"""The example workflows' start photos, copied into ComfyUI's input folder at pack load.

Core *Load Image* lists only files in ComfyUI's input folder, so the photos shipped in
`workflows/inputs/` are copied there as `cag_example_<name>`, letting the example workflows run
without the user copying files by hand. A file that is already there is never overwritten (it
may be the user's own), and nothing here can stop the pack from loading: a folder that cannot be
written (read-only install, full disk) only logs a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "workflows" / "inputs"
PREFIX = "cag_example_"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
log = logging.getLogger(__name__)


def example_photos(source: Path = EXAMPLE_DIR) -> dict[str, Path]:
    """{name in ComfyUI's input folder: shipped file}, e.g. 'cag_example_inpaint_coffee.png'."""
    if not source.is_dir():
        return {}
    return {PREFIX + p.name: p for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _write_new(destination: Path, data: bytes) -> bool:
    """Create `destination` with `data`; False if it already exists (exclusive create, no race)."""
    try:
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        destination.unlink(missing_ok=True)  # never leave a truncated photo that would then be "kept"
        raise
    return True


def install_example_inputs(input_dir: str | os.PathLike | None = None, source: Path = EXAMPLE_DIR) -> list[str]:
    """Copy the missing example photos into ComfyUI's input folder; returns the names copied.

    Never raises: any failure is logged as one warning and the pack loads without the copies."""
    try:
        if input_dir is None:
            import folder_paths

            input_dir = folder_paths.get_input_directory()
        target = Path(input_dir)
        photos = example_photos(source)
        missing = {name: path for name, path in photos.items() if not (target / name).exists()}
        if not missing:
            return []
        target.mkdir(parents=True, exist_ok=True)
        return [name for name, path in missing.items() if _write_new(target / name, path.read_bytes())]
    except Exception as exc:  # noqa: BLE001 - a convenience must never break ComfyUI's startup
        log.warning(
            "comfyui-cag: could not copy the example photos into ComfyUI's input folder (%s); the example "
            "workflows' Load Image nodes will need a photo of your own.", f"{type(exc).__name__}: {exc}",
        )
        return []
