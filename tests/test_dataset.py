"""`python -m cag_core dataset`: layout, one process vs torchrun, crash and resume, recipe checks.

The end-to-end tests run the real command line in subprocesses (torchrun with 2 CPU processes and
the gloo backend) on a tiny classifier, at 16 -> 32 px with a few steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cag_core import dataset, dataset_files
from cag_core.errors import CaGError
from tiny import save_tiny_classifier

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"class {i}" for i in range(10)]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("models") / "tiny.safetensors", num_classes=10)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _args(tiny: Path, out: Path, *extra: str, classes="0-3", per_class="3", steps="3") -> list[str]:
    return ["dataset", "--classifier", str(tiny), "--classes", classes, "--per-class", per_class,
            "--sizes", "16", "32", "--steps", steps, "--out", str(out), "--quiet", *extra]


def _single(*args: str) -> subprocess.CompletedProcess:
    """The command line in this process (one process, no torchrun): what `python -m cag_core` does,
    without the seconds a new interpreter needs to import torch."""
    import contextlib
    import io

    from cag_core.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, "", err.getvalue())


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "cag_core", *args]


def _files(root: Path) -> dict[str, bytes]:
    """Every file under images/, by relative path, with its bytes (temporaries included)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "images").rglob("*")) if p.is_file()}


def _manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def _images_only(records: list[dict]) -> list[tuple]:
    """What must not depend on the run: which image, its loss and the generator's verdict."""
    return [(r["class"], r["k"], r["file"], r["loss"], r["top1"], r["p_target"]) for r in records]


@pytest.fixture(scope="module")
def reference(tiny_file, tmp_path_factory) -> Path:
    """One process, --batch 4: the files every other way of running must reproduce."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    done = _single(*_args(tiny_file, out, "--batch", "4", "--npz"))
    assert done.returncode == 0, done.stderr
    return out


def test_layout_of_a_data_set(reference):
    """images/<class:04d>/<k:05d>.png, one manifest line per image in (class, k) order, the recipe,
    and samples.npz in the ADM layout (arr_0 uint8 NHWC, arr_1 int64), in a shuffled order."""
    records = _manifest(reference)
    assert [(r["class"], r["k"]) for r in records] == [(c, k) for c in range(4) for k in range(3)]
    for r in records:
        assert (reference / r["file"]).is_file() and r["file"] == f"images/{r['class']:04d}/{r['k']:05d}.png"
        assert set(r) >= {"class", "k", "seed", "loss", "seconds", "top1", "p_target"}
        assert 0 <= r["p_target"] <= 1 and r["seed"] == 0
    recipe = json.loads((reference / "recipe.json").read_text())
    assert recipe["config"]["sizes"] == [16, 32] and recipe["classifiers"][0]["weights"]["sha256"]
    with np.load(reference / "samples.npz") as npz:
        images, labels = npz["arr_0"], npz["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (12, 32, 32, 3)
    assert labels.dtype == np.int64 and sorted(labels.tolist()) == sorted(r["class"] for r in records)
    assert labels.tolist() != sorted(labels.tolist())  # not in class order: ADM's IS splits need a mix
    from PIL import Image

    by_label = {}
    for image, label in zip(images, labels):
        by_label.setdefault(int(label), []).append(image)
    first = np.asarray(Image.open(reference / "images/0002/00001.png"))
    assert any(np.array_equal(first, image) for image in by_label[2])
    assert not list(reference.rglob("*.tmp"))


def test_two_processes_give_the_same_files(tiny_file, reference, tmp_path):
    """torchrun --nproc-per-node 2 with --batch 3 writes byte-identical PNGs and the same losses as
    one process with --batch 4; each rank logs its own work."""
    out = tmp_path / "two"
    done = subprocess.run(_torchrun(*_args(tiny_file, out, "--batch", "3", "--npz")), env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _files(out) == _files(reference)
    assert _images_only(_manifest(out)) == _images_only(_manifest(reference))
    assert {r["rank"] for r in _manifest(out)} == {0, 1}
    for r in (0, 1):
        assert "batch 1/" in (out / "logs" / f"rank-{r}.log").read_text()
    with np.load(out / "samples.npz") as a, np.load(reference / "samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])


def _worker_pids(parent: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_a_rank_killed_mid_run_then_rerun_gives_the_complete_set(tiny_file, reference, tmp_path):
    """SIGKILL of one rank while it works ends the job with an error; rerunning the same command
    makes exactly the missing images: no duplicate, missing, truncated or temporary file, one
    manifest line per image, and every file equal to the uninterrupted run's."""
    out = tmp_path / "killed"
    args = _torchrun(*_args(tiny_file, out, "--batch", "1"))
    job = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list((out / "records").rglob("*.json"))) < 2:
            time.sleep(0.05)
        assert job.poll() is None, "the job ended before it could be killed: " + job.stdout.read()[-2000:]
        workers = _worker_pids(job.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0, output[-2000:]
    made_before = len(list((out / "records").rglob("*.json")))
    assert 2 <= made_before < 12
    assert not (out / "manifest.jsonl").exists()

    again = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{made_before} of 12 images already made" in again.stderr
    assert _files(out) == _files(reference)  # nothing extra, nothing truncated, nothing left under a tmp name
    records = _manifest(out)
    assert _images_only(records) == _images_only(_manifest(reference))
    assert len({(r["class"], r["k"]) for r in records}) == len(records) == 12


def test_a_failing_rank_ends_the_job_with_its_error(tiny_file, tmp_path):
    """Rank 1 cannot open its log (a folder is in the way): the job stops with that error instead
    of rank 0 waiting for it."""
    out = tmp_path / "failing"
    (out / "logs" / "rank-1.log").mkdir(parents=True)
    start = time.monotonic()
    done = subprocess.run(_torchrun(*_args(tiny_file, out, "--batch", "2", "--timeout", "10")), env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "IsADirectoryError" in done.stderr + done.stdout
    assert time.monotonic() - start < 120


def test_rerun_with_another_recipe_is_refused(tiny_file, reference, tmp_path):
    """A folder holds one recipe: other steps (or any other recipe flag) are refused, naming the
    difference, and nothing is written; the same recipe with more classes extends it."""
    out = tmp_path / "mixed"
    assert _single(*_args(tiny_file, out, classes="0", per_class="1")).returncode == 0
    refused = _single(*_args(tiny_file, out, classes="0", per_class="2", steps="4"))
    assert refused.returncode == 2
    assert "another recipe" in refused.stderr and "steps" in refused.stderr
    assert len(list((out / "records").rglob("*.json"))) == 1
    extended = _single(*_args(tiny_file, out, "--batch", "4", classes="0-1", per_class="3"))
    assert extended.returncode == 0, extended.stderr
    assert len(_manifest(out)) == 6


def test_per_stage_view_noise_is_recorded_only_when_used(tiny_file, tmp_path):
    """The recipe file holds `view_noise` only when stages differ in view noise, so folders written
    before it existed still resume; per-stage noise on such a folder is refused, naming it."""
    out = tmp_path / "noise"
    assert _single(*_args(tiny_file, out, classes="0", per_class="1")).returncode == 0
    assert "view_noise" not in json.loads((out / dataset_files.RECIPE).read_text())["config"]
    refused = _single(*_args(tiny_file, out, "--view-noise", "0.3", "0", classes="0", per_class="2"))
    assert refused.returncode == 2
    assert "another recipe" in refused.stderr and "view_noise" in refused.stderr


def test_lucids_spectrum_is_recorded_as_before_the_steep_default(tiny_file, tmp_path):
    """`--decay-power 1` (Lucid's 1/f, what every folder before the steep default used) is recorded
    as those folders recorded it, None, so they still resume; the steep default is another recipe."""
    out = tmp_path / "spectrum"
    assert _single(*_args(tiny_file, out, "--decay-power", "1", classes="0", per_class="1")).returncode == 0
    assert json.loads((out / dataset_files.RECIPE).read_text())["config"]["stage"]["decay_power"] is None
    refused = _single(*_args(tiny_file, out, classes="0", per_class="2"))
    assert refused.returncode == 2
    assert "another recipe" in refused.stderr and "decay_power" in refused.stderr
    resumed = _single(*_args(tiny_file, out, "--decay-power", "1.0", classes="0", per_class="2"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(_manifest(out)) == 2


def test_the_bn_prior_every_step_is_recorded_as_before(tiny_file, tmp_path):
    """`--bn-every 1` (the prior in every step, what every folder before bn_every used) is not
    recorded, as those folders did not record it, so they still resume; `--bn-every 2` is another
    recipe, and the refusal names the field."""
    out = tmp_path / "bn_every"
    assert _single(*_args(tiny_file, out, "--bn-every", "1", classes="0", per_class="1")).returncode == 0
    assert "bn_every" not in json.loads((out / dataset_files.RECIPE).read_text())["config"]["stage"]
    refused = _single(*_args(tiny_file, out, "--bn-every", "2", classes="0", per_class="2"))
    assert refused.returncode == 2
    assert "another recipe" in refused.stderr and "bn_every" in refused.stderr


def test_an_image_without_its_record_is_made_again(tiny_file, reference, tmp_path):
    """A PNG whose record is missing (killed between the two writes) or a leftover temporary file
    does not count as finished: the rerun writes the image again, the same bytes, and removes the
    temporary."""
    out = tmp_path / "partial"
    assert _single(*_args(tiny_file, out, "--batch", "4")).returncode == 0
    png = out / "images" / "0001" / "00002.png"
    (out / "records" / "0001" / "00002.json").unlink()
    png.write_bytes(b"truncated")
    stale = png.with_name(".00002.png.999.tmp")
    stale.write_bytes(b"x")
    assert _single(*_args(tiny_file, out, "--batch", "4")).returncode == 0
    assert png.read_bytes() == (reference / "images" / "0001" / "00002.png").read_bytes()
    assert not stale.exists() and len(_manifest(out)) == 12


def test_batch_coupling_losses_are_refused(tiny_file, tmp_path):
    done = _single(*_args(tiny_file, tmp_path / "div", "--diversity", "0.1"))
    assert done.returncode == 2 and "depend on --batch" in done.stderr
    # The BN-statistics prior is per image: a data set may use it.
    assert _single(*_args(tiny_file, tmp_path / "bn", "--bn", "0.01")).returncode == 0


# -- pieces ------------------------------------------------------------------------------------


def test_class_specs(tmp_path):
    assert dataset.parse_classes("all", CLASSES) == list(range(10))
    assert dataset.parse_classes("2-4,7, 0", CLASSES) == [0, 2, 3, 4, 7]
    listed = tmp_path / "classes.txt"
    listed.write_text("# my classes\nclass 3\n9\n\nclass 3\n")
    assert dataset.parse_classes(f"@{listed}", CLASSES) == [3, 9]
    for bad, words in (("5-2", "upwards"), ("0-10", "0-9"), ("", "empty"), ("@nope.txt", "no file"),
                       ("class 12", "class")):
        with pytest.raises(CaGError, match=words):
            dataset.parse_classes(bad, CLASSES)


def test_batches_are_full_and_dealt_round_robin():
    items = [(c, k) for c in range(3) for k in range(4)]  # 12 images
    dealt = dataset.deal_batches(items, 5, 2)
    assert [len(b) for b in dealt[0]] == [5, 2] and [len(b) for b in dealt[1]] == [5]
    assert sorted(i for rank in dealt for b in rank for i in b) == items
    assert dataset.deal_batches(items, 4, 4)[3] == []
    with pytest.raises(CaGError, match="at least 1"):
        dataset.deal_batches(items, 0, 1)


def test_samples_npz_streams_and_checks(tmp_path):
    images = [np.full((4, 5, 3), i, np.uint8) for i in range(3)]
    dataset_files.write_samples_npz(tmp_path / "s.npz", iter(images), [7, 8, 9], (4, 5))
    with np.load(tmp_path / "s.npz") as npz:
        assert npz["arr_0"].shape == (3, 4, 5, 3) and npz["arr_0"][2].max() == 2
        assert npz["arr_1"].tolist() == [7, 8, 9] and npz["arr_1"].dtype == np.int64
    with pytest.raises(CaGError, match="expected uint8"):
        dataset_files.write_samples_npz(tmp_path / "t.npz", iter([np.zeros((4, 4, 3), np.uint8)]), [1], (4, 5))
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no partial file left


def test_a_data_set_folder_is_evaluated_as_it_is(reference, tmp_path):
    """`evaluate DIR` reads the folder `dataset --npz` wrote (samples.npz), here against its own
    PNGs as the reference, with the tests' stand-in feature extractor: FID ~ 0."""
    pytest.importorskip("torch_fidelity")
    import tiny_features

    from cag_core.cli import main

    name = tiny_features.register()
    out = tmp_path / "report.json"
    code = main(["evaluate", str(reference), "--reference", str(reference / "images"), "--feature-extractor", name,
                 "--no-cache", "--quiet", "--metrics", "fid,isc", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["samples"]["count"] == 12 and report["metrics"]["fid"] < 1e-3
