"""The on-disk layout of a generated data set, written so that a crash never leaves a bad file.

    DIR/recipe.json                         what made the images (compared on every rerun)
    DIR/images/<class:04d>/<k:05d>.png      the images, RGB 8-bit
    DIR/records/<class:04d>/<k:05d>.json    one record per finished image (written after its PNG)
    DIR/manifest.jsonl                      all records, sorted by (class, k): written at the end
    DIR/samples.npz                         with --npz: arr_0 uint8 [N, H, W, 3], arr_1 int64 labels
    DIR/logs/rank-<r>.log                   what each process did

Every file is written under a temporary name in its final folder and renamed into place
(`os.replace` is atomic on POSIX file systems), so a process killed at any moment leaves either
the old state or the new file, never a truncated one. An image counts as finished when its record
exists (the record is written after the PNG), so an image killed between the two is made again:
the same image, since it depends only on its key and the recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import CaGError

RECIPE = "recipe.json"
MANIFEST = "manifest.jsonl"
SAMPLES = "samples.npz"
TMP_SUFFIX = ".tmp"


def image_path(root: Path, cls: int, k: int) -> Path:
    return root / "images" / f"{cls:04d}" / f"{k:05d}.png"


def record_path(root: Path, cls: int, k: int) -> Path:
    return root / "records" / f"{cls:04d}" / f"{k:05d}.json"


def _temporary(path: Path) -> Path:
    # Hidden, per process, in the same folder (a rename across file systems is not atomic).
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_png_atomic(path: Path, array: np.ndarray) -> None:
    """[H, W, 3] uint8 -> PNG (PIL's encoder is deterministic: the same pixels, the same bytes)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def remove_temporaries(root: Path) -> int:
    """Delete what killed processes left under temporary names; returns how many."""
    count = 0
    for folder in (root, root / "images", root / "records"):
        if not folder.is_dir():
            continue
        for path in folder.rglob(f".*{TMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            count += 1
    return count


def finished(root: Path, items: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (class, k) among `items` whose record and image are both on disk."""
    done = set()
    for cls, k in items:
        if record_path(root, cls, k).is_file() and image_path(root, cls, k).is_file():
            done.add((cls, k))
    return done


def all_records(root: Path) -> list[dict]:
    """Every finished image's record in the folder, sorted by (class, k)."""
    records = []
    folder = root / "records"
    if folder.is_dir():
        for path in sorted(folder.glob("*/*.json")):
            record = json.loads(path.read_text())
            if image_path(root, record["class"], record["k"]).is_file():
                records.append(record)
    return sorted(records, key=lambda r: (r["class"], r["k"]))


def write_manifest(root: Path, records: Sequence[dict]) -> Path:
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    path = root / MANIFEST
    write_atomic(path, lines.encode())
    return path


# -- the recipe --------------------------------------------------------------------------------


def file_identity(path: str | os.PathLike) -> dict:
    """Name, size and sha256 of a weights file: what a recipe compares (paths differ between machines)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def check_or_write_recipe(root: Path, recipe: dict) -> bool:
    """Write `recipe` into a new data set folder, or check that the folder's recipe is the same.
    Returns True when the folder already held this recipe. Two recipes never mix in one folder."""
    path = root / RECIPE
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(recipe, indent=2, sort_keys=True) + "\n").encode())
        return False
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CaGError(f"{path} is not valid JSON ({exc}); it is not a data set folder this tool wrote.") from None
    if stored != recipe:
        diffs = _differences(stored, recipe)
        shown = "; ".join(f"{key}: {old} in the folder, {new} now" for key, old, new in diffs[:4])
        more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise CaGError(
            f"{root} holds a data set made with another recipe: {shown}{more}. Images of two recipes would mix: "
            "use another --out folder, or the flags of the first run."
        )
    return True


def _differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), json.dumps(old), json.dumps(new))]


# -- the ADM sample batch -----------------------------------------------------------------------


def write_samples_npz(path: Path, images: Iterable[np.ndarray], labels: Sequence[int], shape: tuple[int, int]) -> None:
    """`np.savez` layout (arr_0 uint8 [N, H, W, 3], arr_1 int64 [N]), streamed image by image so a
    50,000-image batch never has to fit in memory, written atomically."""
    n, (h, w) = len(labels), shape
    tmp = _temporary(path)
    try:
        _write_npz(tmp, images, labels, n, h, w)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _write_npz(tmp: Path, images: Iterable[np.ndarray], labels: Sequence[int], n: int, h: int, w: int) -> None:
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("arr_0.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(
                member, {"descr": "|u1", "fortran_order": False, "shape": (n, h, w, 3)}
            )
            written = 0
            for image in images:
                if image.shape != (h, w, 3) or image.dtype != np.uint8:
                    raise CaGError(f"Sample {written} is {image.dtype} {image.shape}; expected uint8 {(h, w, 3)}.")
                member.write(np.ascontiguousarray(image).tobytes())
                written += 1
            if written != n:
                raise CaGError(f"Wrote {written} samples but have {n} labels.")
        with archive.open("arr_1.npy", "w") as member:
            np.lib.format.write_array(member, np.asarray(labels, dtype=np.int64), allow_pickle=False)
