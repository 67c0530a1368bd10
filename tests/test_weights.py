"""Safe weight loading: safetensors first, weights_only pickles, nothing that runs code."""

import os
import pickle

import pytest
import torch

from cag_core.errors import WeightsError
from cag_core.weights import load_file, read_safetensors_metadata, save_file


class _CreatesFile:
    """Unpickling this would create a file: the payload of a malicious checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    """A .pth whose unpickling would create a file is refused, with a conversion hint, and the file never appears."""
    victim = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"weight": _CreatesFile(str(victim))}, f)
    with pytest.raises(WeightsError, match="refused.*convert"):
        load_file(evil)
    assert not victim.exists()


def test_malicious_torch_save_is_refused(tmp_path):
    """The same payload written with torch.save (zip format) is refused too."""
    victim = tmp_path / "pwned2.txt"
    evil = tmp_path / "evil2.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _CreatesFile(str(victim))}, evil)
    with pytest.raises(WeightsError, match="refused"):
        load_file(evil)
    assert not victim.exists()


def test_safetensors_roundtrip_with_metadata(tmp_path):
    """save_file/load_file keep tensors and metadata."""
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6.0).view(2, 3)}, path, metadata={"cag_arch": "resnet18"})
    assert torch.equal(load_file(path)["a"], torch.arange(6.0).view(2, 3))
    assert read_safetensors_metadata(path) == {"cag_arch": "resnet18"}


def test_pth_containers_and_module_prefix_are_unwrapped(tmp_path):
    """{'model': sd}, {'state_dict': sd} and DataParallel 'module.' prefixes load as plain state dicts."""
    sd = {"module.fc.weight": torch.ones(2, 2)}
    for key in ("model", "state_dict"):
        path = tmp_path / f"{key}.pth"
        torch.save({key: sd, "epoch": 3}, path)
        assert list(load_file(path)) == ["fc.weight"]


def test_truncated_files_give_a_clear_error(tmp_path):
    """Truncated .safetensors and .pth files raise WeightsError naming the file."""
    good_st = tmp_path / "good.safetensors"
    save_file({"a": torch.zeros(100)}, good_st)
    good_pth = tmp_path / "good.pth"
    torch.save({"a": torch.zeros(100)}, good_pth)
    for good in (good_st, good_pth):
        bad = tmp_path / f"bad{good.suffix}"
        bad.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
        with pytest.raises(WeightsError, match="bad"):
            load_file(bad)


def test_unknown_extension_and_missing_file(tmp_path):
    """Only weight extensions are read; a missing file is named."""
    other = tmp_path / "weights.pkl"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="must be one of"):
        load_file(other)
    with pytest.raises(WeightsError, match="does not exist"):
        load_file(tmp_path / "nope.safetensors")


def test_a_pickle_of_no_tensors_is_refused(tmp_path):
    """A checkpoint that holds no state dict says so."""
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(WeightsError, match="state dict"):
        load_file(path)
