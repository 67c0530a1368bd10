"""Image sets for evaluation: an ADM-style `.npz` batch or a folder of PNGs, as uint8 tensors.

`open_image_set(path)` accepts what `python -m cag_core dataset` writes (a folder with
`samples.npz`, else `images/**.png`), a plain `.npz` (`arr_0` uint8 `[N, H, W, 3]`, the layout of
openai/guided-diffusion's evaluation batches) or any folder of PNGs. Every layout problem is a
`CaGError` naming the file and the fix.

Large batches are not read into memory: `np.savez` stores members uncompressed, so the `.npy`
inside the zip is memory-mapped at its offset (ADM's reference batch is 10,000 x 256 x 256 x 3 =
2 GB); a compressed member (`np.savez_compressed`) falls back to a normal load.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import CaGError

SAMPLES_NPZ = "samples.npz"
IMAGES_DIR = "images"
MANIFEST = "manifest.jsonl"
RECIPE = "recipe.json"
_ZIP_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # signature ... file name length, extra field length


@dataclass
class ImageSet:
    """N same-sized RGB images, read one at a time as uint8 [3, H, W] tensors."""

    path: Path  # what the user named
    source: str  # "npz", "samples.npz" (inside a dataset folder), "images" (PNGs of a dataset folder), "folder"
    images: Dataset  # torch-fidelity's input: items are uint8 [3, H, W]
    size: tuple[int, int]  # (H, W)
    labels: np.ndarray | None = None  # arr_1 of an npz, when present
    npz_path: Path | None = None  # the .npz file the images come from, if any
    memory_mapped: bool = False
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


class NpzImages(Dataset):
    """`arr_0` of an npz: memory-mapped where stored uncompressed, loaded otherwise.

    Pickles as (path, offset, dtype, shape), not as the array, so DataLoader workers started with
    `spawn` reopen the map instead of copying gigabytes.
    """

    def __init__(self, path: Path, array: np.ndarray | None = None, offset: int | None = None,
                 shape: tuple[int, ...] | None = None):
        self.path, self.offset = path, offset
        self.shape = tuple(array.shape) if array is not None else shape
        self._array = array

    def _data(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.offset, shape=self.shape)
        return self._array

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.offset is not None:  # a map can be reopened; a loaded array travels as it is
            state["_array"] = None
        return state

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._data()[i].transpose(2, 0, 1)))


class PngImages(Dataset):
    """A list of RGB 8-bit PNG files (decoded as torch-fidelity decodes a folder: PIL, no resize)."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as image:
            array = np.asarray(image.convert("RGB"))
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class ResizedImages(Dataset):
    """Another set's images resized to (H, W) the way ADM's data loader shrinks ImageNet.

    guided-diffusion `image_datasets.center_crop_arr`: halve with BOX while the image is at least
    twice the target, then one BICUBIC resize. Only used on request (`--resize-samples`).
    """

    def __init__(self, images: Dataset, size: tuple[int, int]):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        image = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        height, width = self.size
        while image.width >= 2 * width and image.height >= 2 * height:
            image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
        image = image.resize((width, height), resample=Image.BICUBIC)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))


def open_image_set(path: str | Path, role: str = "samples") -> ImageSet:
    """The images at `path`: a dataset folder, an `.npz` batch, or a folder of PNGs."""
    path = Path(path)
    if not path.exists():
        raise CaGError(f"The {role} path {path} does not exist: give a dataset folder, an .npz batch or a folder of PNGs.")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise CaGError(f"The {role} file {path} is not an .npz: give an .npz batch (arr_0 uint8 [N, H, W, 3]) "
                           "or a folder of PNGs.")
        return _npz_set(path, path, "npz", role)
    if (path / SAMPLES_NPZ).is_file():
        return _npz_set(path / SAMPLES_NPZ, path, "samples.npz", role)
    if (path / IMAGES_DIR).is_dir():
        return _png_set(path / IMAGES_DIR, path, "images", role)
    return _png_set(path, path, "folder", role)


def npz_members(path: Path) -> list[str]:
    """Array names in an npz ('arr_0', 'mu', ...), or a CaGError when it is not a readable npz."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [name[:-4] for name in archive.namelist() if name.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise CaGError(f"{path} is not a readable .npz file ({exc}): write it with numpy.savez.") from exc


def read_npz_array(path: Path, name: str) -> np.ndarray:
    """One small member of an npz (e.g. ADM's `mu`, `sigma`), loaded; no pickles."""
    with np.load(path, allow_pickle=False) as archive:
        return archive[name]


def _npz_set(npz: Path, shown: Path, source: str, role: str) -> ImageSet:
    members = npz_members(npz)
    if "arr_0" not in members:
        held = ", ".join(members) if members else "no arrays"
        raise CaGError(f"{npz} has no arr_0 (it holds {held}): ADM-style batches keep the images in arr_0 "
                       "as uint8 [N, H, W, 3].")
    mapped = _memory_map_member(npz, "arr_0")
    if mapped is not None:
        offset, dtype, shape = mapped
        _check_array_layout(npz, dtype, shape)
        images = NpzImages(npz, offset=offset, shape=shape)
    else:
        try:
            array = read_npz_array(npz, "arr_0")
        except ValueError as exc:  # object arrays need pickles, which are refused
            raise CaGError(f"arr_0 of {npz} cannot be read without pickle ({exc}): save uint8 images with numpy.savez.") from exc
        _check_array_layout(npz, array.dtype, array.shape)
        images = NpzImages(npz, array=array)
    labels = read_npz_array(npz, "arr_1") if "arr_1" in members else None
    if labels is not None and labels.shape != (len(images),):
        raise CaGError(f"arr_1 of {npz} has shape {labels.shape}, but arr_0 holds {len(images)} images: "
                       "arr_1 must be one integer label per image.")
    return ImageSet(shown, source, images, (images.shape[1], images.shape[2]), labels, npz, mapped is not None)


def _check_array_layout(npz: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or shape[-1] != 3:
        hint = " (it looks channels-first: transpose to [N, H, W, 3])" if len(shape) == 4 and shape[1] == 3 else ""
        raise CaGError(f"arr_0 of {npz} has shape {list(shape)}, expected [N, H, W, 3] RGB images{hint}.")
    if np.dtype(dtype) != np.uint8:
        raise CaGError(f"arr_0 of {npz} is {np.dtype(dtype)}, expected uint8 0..255 "
                       "(convert floats in [0, 1] with (x * 255).round().clip(0, 255).astype(np.uint8)).")
    if shape[0] == 0:
        raise CaGError(f"arr_0 of {npz} holds no images (shape {list(shape)}).")


def _memory_map_member(npz: Path, name: str) -> tuple[int, np.dtype, tuple[int, ...]] | None:
    """(data offset, dtype, shape) of an uncompressed C-order member, or None to load it instead."""
    with zipfile.ZipFile(npz) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
        return None
    with open(npz, "rb") as file:
        file.seek(info.header_offset)
        local = _ZIP_LOCAL_HEADER.unpack(file.read(_ZIP_LOCAL_HEADER.size))
        if local[0] != b"PK\x03\x04":
            return None
        # The local header's name and extra field lengths can differ from the central directory's.
        file.seek(info.header_offset + _ZIP_LOCAL_HEADER.size + local[-2] + local[-1])
        try:
            version = np.lib.format.read_magic(file)
            header = (np.lib.format.read_array_header_1_0(file) if version == (1, 0)
                      else np.lib.format.read_array_header_2_0(file) if version == (2, 0) else None)
        except ValueError:
            return None
        if header is None:
            return None
        shape, fortran, dtype = header
        if fortran or dtype.hasobject:
            return None
        return file.tell(), dtype, tuple(shape)


def _png_set(folder: Path, shown: Path, source: str, role: str) -> ImageSet:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise CaGError(f"No PNG images under {folder}: the {role} must be a dataset folder (samples.npz or "
                       "images/**.png), an .npz batch, or a folder of PNGs.")
    size = None
    for file in files:  # headers only: PIL reads the size and mode without decoding pixels
        try:
            with Image.open(file) as image:
                mode, this = image.mode, (image.height, image.width)
        except OSError as exc:
            raise CaGError(f"{file} is not a readable PNG ({exc}): remove it or write it again.") from exc
        if mode != "RGB":
            raise CaGError(f"{file} is a {mode} image, expected 8-bit RGB: save it with Image.convert('RGB').")
        if size is None:
            size, first = this, file
        elif this != size:
            raise CaGError(f"{file} is {this[1]}x{this[0]} but {first} is {size[1]}x{size[0]}: "
                           f"all {role} must have one size.")
    return ImageSet(shown, source, PngImages(files), size)


def dataset_counts(folder: Path) -> dict:
    """What a dataset folder says about itself: manifest lines and classes, and its recipe."""
    out: dict = {}
    manifest = folder / MANIFEST
    if manifest.is_file():
        lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        out["manifest_images"] = len(lines)
        out["classes"] = len({entry.get("class") for entry in lines})
    recipe = folder / RECIPE
    if recipe.is_file():
        out["recipe"] = json.loads(recipe.read_text())
    return out


def file_identity(path: Path, hash_limit: int | None = None) -> dict:
    """Name, size, mtime and sha256 of a file (sha256 skipped above `hash_limit` bytes), or of a folder's PNG list."""
    if path.is_dir():
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*.png"))
        for file in files:
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"name": path.name, "files": len(files), "listing_sha256": digest.hexdigest()}
    stat = path.stat()
    out = {"name": path.name, "bytes": stat.st_size, "mtime": stat.st_mtime}
    if hash_limit is None or stat.st_size <= hash_limit:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 22), b""):
                digest.update(chunk)
        out["sha256"] = digest.hexdigest()
    return out
