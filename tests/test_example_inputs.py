"""The example workflows' start photos: shipped small and licensed, copied into ComfyUI's input folder."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

INPUTS = REPO_ROOT / "workflows" / "inputs"
PHOTOS = sorted(p for p in INPUTS.iterdir() if p.suffix in (".png", ".jpg"))


def module(comfy):
    return comfy.nodes.example_inputs


def test_three_small_photos_each_with_its_licence():
    """inpaint / outpaint / img2img photos, 256-384 px, under 400 KB together, each in LICENSES.md."""
    assert [p.name.split("_")[0] for p in PHOTOS] == ["img2img", "inpaint", "outpaint"]
    licences = (INPUTS / "LICENSES.md").read_text()
    for path in PHOTOS:
        with Image.open(path) as image:
            assert all(256 <= side <= 384 for side in image.size), (path.name, image.size)
        assert f"`{path.name}`" in licences
    assert sum(p.stat().st_size for p in PHOTOS) < 400 * 1024


def test_inpaint_photo_is_transparent_over_the_region_to_regenerate():
    """RGBA with alpha 0 over one part (Load Image's MASK = 1 - alpha) and opaque elsewhere; the
    photo is kept under the transparent part."""
    with Image.open(INPUTS / "inpaint_coffee.png") as image:
        assert image.mode == "RGBA"
        pixels = np.asarray(image)
    hole = pixels[..., 3] == 0
    assert 0.1 < hole.mean() < 0.5 and np.isin(pixels[..., 3], (0, 255)).all()
    assert pixels[hole][:, :3].std() > 10  # real pixels, not a blanked area


def test_the_pack_load_copied_the_photos(comfy):
    """Loading the pack (the session fixture) put cag_example_* copies into the input folder."""
    folder = comfy.folder_paths.get_input_directory()
    for path in PHOTOS:
        copy = os.path.join(folder, "cag_example_" + path.name)
        assert open(copy, "rb").read() == path.read_bytes()


def test_copies_only_what_is_missing_and_never_overwrites(comfy, tmp_path):
    mine = tmp_path / ("cag_example_" + PHOTOS[0].name)
    mine.write_bytes(b"the user's own file")
    copied = module(comfy).install_example_inputs(tmp_path)
    assert copied == ["cag_example_" + p.name for p in PHOTOS[1:]]
    assert mine.read_bytes() == b"the user's own file"
    assert module(comfy).install_example_inputs(tmp_path) == []  # nothing left to do


def test_creates_a_missing_input_folder(comfy, tmp_path):
    folder = tmp_path / "not" / "yet"
    assert len(module(comfy).install_example_inputs(folder)) == len(PHOTOS)
    assert sorted(os.listdir(folder)) == sorted("cag_example_" + p.name for p in PHOTOS)


def test_a_read_only_folder_logs_a_warning_and_loads_on(comfy, tmp_path, monkeypatch, caplog):
    """A folder that refuses new files costs a warning, never an exception (root ignores chmod,
    so the refusal is also simulated)."""
    folder = tmp_path / "input"
    folder.mkdir()
    folder.chmod(0o555)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    if os.geteuid() == 0:
        monkeypatch.setattr(module(comfy).os, "open", refuse)
    try:
        with caplog.at_level(logging.WARNING):
            assert module(comfy).install_example_inputs(folder) == []
    finally:
        folder.chmod(0o755)
    assert not os.listdir(folder)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Permission denied" in warnings[0] and "example photos" in warnings[0]


def test_a_failed_write_leaves_no_partial_file(comfy, tmp_path, monkeypatch, caplog):
    """A write that fails half way (disk full) removes the file, so the next start copies it again."""
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd, mode):
            self.file = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(module(comfy).os, "fdopen", FullDisk)
    with caplog.at_level(logging.WARNING):
        assert module(comfy).install_example_inputs(tmp_path) == []
    assert os.listdir(tmp_path) == []
    assert "No space left" in caplog.text


def test_no_input_directory_in_comfyui_is_only_a_warning(comfy, monkeypatch, caplog):
    monkeypatch.delattr(comfy.folder_paths, "get_input_directory")
    with caplog.at_level(logging.WARNING):
        assert module(comfy).install_example_inputs() == []
    assert "example photos" in caplog.text


@pytest.fixture(scope="module")
def remade(tmp_path_factory):
    pytest.importorskip("skimage")
    from scripts.make_example_inputs import main

    out = tmp_path_factory.mktemp("remade")
    main(["--out", str(out)])
    return out


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_make_example_inputs_reproduces_the_photos(path, remade):
    """scripts/make_example_inputs.py makes them from scikit-image (same size and mode; pixels
    close: JPEG encoders may differ by a level)."""
    with Image.open(path) as shipped, Image.open(remade / path.name) as made:
        assert (shipped.size, shipped.mode) == (made.size, made.mode)
        difference = np.abs(np.asarray(shipped, dtype=np.int16) - np.asarray(made, dtype=np.int16))
    assert difference.mean() < 1.0
