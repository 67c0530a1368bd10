"""`python -m cag_core evaluate`: the plumbing around torch-fidelity, with a stand-in feature extractor.

No test downloads anything: torch-fidelity's Inception is replaced by `tiny_features` (registered
through torch-fidelity's `register_feature_extractor`), and every download path is blocked, so a
test that reached the real Inception would fail instead of fetching 96 MB.
"""

import hashlib
import json
import pickle
import socket
import sys
import urllib.error

import numpy as np
import pytest
import torch

pytest.importorskip("torch_fidelity", reason="evaluation needs the eval extra: pip install 'torch-fidelity==0.4.0'")

import tiny_features  # noqa: E402
from cag_core import evaluate  # noqa: E402
from cag_core.cli import main  # noqa: E402
from cag_core.image_sets import open_image_set  # noqa: E402

TINY = tiny_features.register()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network and a private TORCH_HOME; records (and refuses) every attempted download."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    attempts = []

    def refuse_download(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("downloads are blocked in the tests")

    real_connect = socket.socket.connect

    def refuse_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # DataLoader workers talk over Unix sockets
            raise OSError(f"network access to {address} is blocked in the tests")
        return real_connect(sock, address)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(inception, "load_state_dict_from_url", refuse_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    yield attempts
    assert not attempts, f"a test tried to download {attempts}"


def images(n, size=32, seed=0, brightness=(0, 256)):
    """n varied RGB images: a random base colour per image plus noise, uint8 [n, size, size, 3]."""
    rng = np.random.default_rng(seed)
    low, high = brightness
    base = rng.integers(low, high, (n, 1, 1, 3))
    noise = rng.integers(-40, 41, (n, size, size, 3))
    return np.clip(base + noise, low, high - 1).astype(np.uint8)


def write_dataset(folder, array, labels, npz=False):
    """The layout of `python -m cag_core dataset`: images/<class>/<k>.png, manifest.jsonl, recipe.json."""
    from PIL import Image

    lines = []
    counts = {}
    for image, label in zip(array, labels):
        k = counts.get(int(label), 0)
        counts[int(label)] = k + 1
        file = f"images/{int(label):04d}/{k:05d}.png"
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / file)
        lines.append(json.dumps({"class": int(label), "k": k, "file": file, "seed": k, "loss": 0.1,
                                 "seconds": 1.0, "top1": int(label), "p_target": 0.9}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "recipe.json").write_text(json.dumps({"steps": [100, 100, 100], "sizes": [64, 128, 256]}))
    if npz:
        np.savez(folder / "samples.npz", array, np.asarray(labels, dtype=np.int64))
    return folder


def evaluate_cli(samples, reference, *extra, out=None):
    """Run the command in-process with the stand-in; returns (exit code, JSON report or None)."""
    out = out or (samples.parent if samples.is_file() else samples) / "report.json"
    argv = ["evaluate", str(samples), "--reference", str(reference), "--feature-extractor", TINY,
            "--no-cache", "--quiet", "--out", str(out), *extra]
    code = main(argv)
    return code, (json.loads(out.read_text()) if code == 0 else None)


@pytest.fixture
def sets(tmp_path):
    """Samples (class-sorted, as a dataset folder writes them) and a reference, both 48 x 32 x 32."""
    samples = images(48, seed=1)
    labels = np.repeat(np.arange(4), 12)
    reference = images(48, seed=2)
    np.savez(tmp_path / "samples.npz", samples, labels)
    np.savez(tmp_path / "reference.npz", reference)
    return tmp_path, samples, labels, reference


def test_npz_and_png_folder_give_the_same_numbers(sets, tmp_path):
    """The same images as samples.npz, as a dataset's images/ PNGs and as a bare .npz: identical metrics."""
    root, samples, labels, _ = sets
    from_npz_dir = write_dataset((root / "with_npz").resolve(), samples, labels, npz=True)
    (root / "pngs").mkdir()
    from_pngs = write_dataset(root / "pngs", samples, labels)
    reports = [evaluate_cli(path, root / "reference.npz")[1]
               for path in (from_npz_dir, from_pngs, root / "samples.npz")]
    assert [r["samples"]["source"] for r in reports] == ["samples.npz", "images", "npz"]
    assert reports[0]["metrics"] == reports[1]["metrics"] == reports[2]["metrics"]
    assert reports[1]["samples"]["manifest_images"] == 48 and reports[1]["samples"]["classes"] == 4
    assert reports[1]["recipe"] == {"steps": [100, 100, 100], "sizes": [64, 128, 256]}


def test_a_set_against_itself_has_fid_zero_and_a_different_set_a_larger_fid(sets):
    """Same set: FID ~ 0, precision = recall = 1; a darker set: clearly larger FID and KID."""
    root, samples, _, _ = sets
    np.savez(root / "dark.npz", images(48, seed=3, brightness=(0, 100)))
    np.savez(root / "other_seed.npz", images(48, seed=4))
    _, same = evaluate_cli(root / "samples.npz", root / "samples.npz")
    _, similar = evaluate_cli(root / "samples.npz", root / "other_seed.npz")
    _, dark = evaluate_cli(root / "samples.npz", root / "dark.npz")
    assert abs(same["metrics"]["fid"]) < 1e-5
    assert same["metrics"]["precision"] == same["metrics"]["recall"] == 1.0
    assert dark["metrics"]["fid"] > 5 * similar["metrics"]["fid"] > 0
    assert dark["metrics"]["kid_mean"] > similar["metrics"]["kid_mean"]
    assert dark["metrics"]["precision"] < similar["metrics"]["precision"]


def test_metrics_equal_torch_fidelity_calculate_metrics(sets):
    """Our step-by-step use of torch-fidelity gives what its own calculate_metrics gives."""
    import torch_fidelity

    root, *_ = sets
    samples, reference = open_image_set(root / "samples.npz"), open_image_set(root / "reference.npz")
    options = evaluate.MetricOptions(kid_subset_size=48, kid_subsets=20)
    ours = evaluate.compute_metrics(samples, reference, evaluate.METRICS, options, feature_extractor=TINY,
                                    verbose=False)
    theirs = torch_fidelity.calculate_metrics(
        input1=samples.images, input2=reference.images, cuda=False, isc=True, fid=True, kid=True, prc=True,
        feature_extractor=TINY, kid_subset_size=48, kid_subsets=20, cache=False, verbose=False)
    assert theirs and {k: ours[k] for k in theirs} == theirs


def test_json_report_layout(sets):
    """The report names values, counts, sizes, the library, the extractor and the reference's identity."""
    root, *_ = sets
    code, report = evaluate_cli(root / "samples.npz", root / "reference.npz", out=root / "out" / "r.json")
    assert code == 0
    m = report["metrics"]
    assert set(m) == {"fid", "fid_vs_images", "fid_vs_stats", "isc_mean", "isc_std", "kid_mean", "kid_std",
                      "precision", "recall", "f_score"}
    assert m["fid"] == m["fid_vs_images"] and m["fid_vs_stats"] is None and report["fid_reference"] == "images"
    assert all(isinstance(m[k], float) for k in m if k != "fid_vs_stats")
    assert report["samples"]["count"] == 48 and report["samples"]["size"] == [32, 32]
    assert report["samples"]["classes"] == 4 and report["samples"]["memory_mapped"] is True
    ref = report["reference"]
    assert ref["name"] == "reference.npz" and ref["count"] == 48 and ref["size"] == [32, 32]
    assert ref["sha256"] == hashlib.sha256((root / "reference.npz").read_bytes()).hexdigest()
    assert ref["bytes"] == (root / "reference.npz").stat().st_size and ref["has_adm_statistics"] is False
    assert report["torch_fidelity"]["version"] == "0.4.0"
    settings = report["settings"]
    assert settings["feature_extractor"] == TINY and settings["isc_splits"] == 10
    assert settings["feature_layers"] == {"fid": "feat", "isc": "logits_unbiased", "kid": "feat", "prc": "feat"}
    assert settings["kid_subset_size"] == 48 and any("KID subset size 1000" in n for n in report["notes"])


def test_default_report_path_and_table(sets, capsys):
    """Without --out the JSON lands beside the samples; the table names every metric."""
    root, *_ = sets
    code = main(["evaluate", str(root / "samples.npz"), "--reference", str(root / "reference.npz"),
                 "--feature-extractor", TINY, "--no-cache", "--quiet", "--metrics", "fid,isc"])
    assert code == 0
    report = json.loads((root / "samples_evaluation_reference.json").read_text())
    assert set(report["metrics"]) == {"fid", "fid_vs_images", "fid_vs_stats", "isc_mean", "isc_std"}
    table = capsys.readouterr().out
    assert "FID vs 48 reference images *" in table and "IS (10 splits)" in table and "KID" not in table


def test_fid_against_precomputed_statistics(sets):
    """With mu/sigma in the reference (as ADM's batches have), FID can be taken against them."""
    root, _, _, reference = sets
    extractor = tiny_features._feature_extractor_class()(TINY, ["feat"])
    features = extractor(torch.from_numpy(reference).permute(0, 3, 1, 2))[0].numpy()
    mu, sigma = features.mean(0).astype(np.float64), np.cov(features, rowvar=False)
    np.savez(root / "with_stats.npz", reference, mu=mu, sigma=sigma)
    _, stats = evaluate_cli(root / "samples.npz", root / "with_stats.npz", "--fid-reference", "stats")
    assert stats["fid_reference"] == "adm-stats" and stats["reference"]["has_adm_statistics"]
    assert stats["metrics"]["fid"] == stats["metrics"]["fid_vs_stats"]
    assert stats["metrics"]["fid_vs_stats"] == pytest.approx(stats["metrics"]["fid_vs_images"], rel=1e-4)
    _, auto = evaluate_cli(root / "samples.npz", root / "with_stats.npz")  # auto: stats are for the Inception only
    assert auto["fid_reference"] == "images" and auto["metrics"]["fid_vs_stats"] is None
    np.savez(root / "wrong_stats.npz", reference, mu=np.zeros(2048), sigma=np.eye(2048))
    assert evaluate_cli(root / "samples.npz", root / "wrong_stats.npz", "--fid-reference", "stats")[0] == 2


def test_reference_features_are_cached_by_content(sets):
    """The reference's features go to torch-fidelity's cache under the file's sha256; a rerun reads them."""
    root, *_ = sets
    cache = root / "cache"
    argv = ["evaluate", str(root / "samples.npz"), "--reference", str(root / "reference.npz"), "--feature-extractor",
            TINY, "--quiet", "--cache-dir", str(cache), "--out", str(root / "c.json")]
    assert main(argv) == 0
    first = json.loads((root / "c.json").read_text())["metrics"]
    digest = hashlib.sha256((root / "reference.npz").read_bytes()).hexdigest()[:16]
    cached = sorted(p.name for p in cache.iterdir())
    assert cached and all(name.startswith(f"cag-reference-{digest}-48x32x32-{TINY}-features-") for name in cached)
    assert main(argv) == 0
    assert json.loads((root / "c.json").read_text())["metrics"] == first


def test_sizes_must_match_unless_resizing_is_asked_for(sets, capsys):
    """16 px samples against a 32 px reference: refused, or resized with --resize-samples and said so."""
    root, *_ = sets
    np.savez(root / "small.npz", images(48, size=16, seed=5))
    code, _ = evaluate_cli(root / "small.npz", root / "reference.npz")
    assert code == 2 and "--resize-samples" in capsys.readouterr().err
    code, report = evaluate_cli(root / "small.npz", root / "reference.npz", "--resize-samples")
    assert code == 0 and report["samples"]["size"] == [32, 32]
    assert any("resized from 16x16 to 32x32" in note for note in report["notes"])
    code, report = evaluate_cli(root / "small.npz", root / "reference.npz", "--metrics", "isc")
    assert code == 0 and report["samples"]["size"] == [16, 16] and not report["notes"]  # IS alone: no size rule


def test_npz_members_are_memory_mapped_when_stored(tmp_path):
    """np.savez members are mapped, not loaded (and pickle without their data); compressed ones are loaded."""
    array = images(6, seed=6)
    np.savez(tmp_path / "stored.npz", array)
    np.savez_compressed(tmp_path / "compressed.npz", array)
    stored, compressed = open_image_set(tmp_path / "stored.npz"), open_image_set(tmp_path / "compressed.npz")
    assert stored.memory_mapped and not compressed.memory_mapped
    for i in range(6):
        expected = torch.from_numpy(array[i]).permute(2, 0, 1)
        assert torch.equal(stored.images[i], expected) and torch.equal(compressed.images[i], expected)
    assert len(pickle.dumps(stored.images)) < 1000 < array.nbytes


def _png(path, size=(32, 32), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)


def _bad_inputs(root):
    """(name, samples path, extra args, phrase the one-sentence error must contain)."""
    np.savez(root / "no_arr0.npz", images=images(4))
    np.savez(root / "floats.npz", images(4).astype(np.float32) / 255)
    np.savez(root / "nchw.npz", images(4).transpose(0, 3, 1, 2))
    np.savez(root / "empty.npz", np.zeros((0, 32, 32, 3), np.uint8))
    (root / "not_npz.txt").write_text("x")
    _png(root / "mixed" / "a.png")
    _png(root / "mixed" / "b.png", size=(16, 16))
    _png(root / "rgba" / "a.png", mode="RGBA")
    (root / "no_pngs").mkdir()
    return [
        ("missing arr_0", "no_arr0.npz", [], "has no arr_0 (it holds images)"),
        ("float images", "floats.npz", [], "is float32, expected uint8"),
        ("channels first", "nchw.npz", [], "channels-first"),
        ("empty npz", "empty.npz", [], "holds no images"),
        ("not an npz", "not_npz.txt", [], "is not an .npz"),
        ("missing path", "nowhere", [], "does not exist"),
        ("mixed sizes", "mixed", [], "must have one size"),
        ("rgba", "rgba", [], "is a RGBA image, expected 8-bit RGB"),
        ("no pngs", "no_pngs", [], "No PNG images under"),
        ("unknown metric", "samples.npz", ["--metrics", "fid,sfid"], "Unknown metric 'sfid'"),
        ("bad batch", "samples.npz", ["--batch-size", "0"], "--batch-size must be a positive integer"),
        ("stats absent", "samples.npz", ["--fid-reference", "stats"], "holds no mu/sigma"),
        ("unknown extractor", "samples.npz", ["--feature-extractor", "nope"], "Unknown feature extractor 'nope'"),
    ]


def test_bad_inputs_give_one_sentence_errors(sets, capsys):
    """Each bad input exits 2 with one line that names the problem and the fix."""
    root, *_ = sets
    for name, samples, extra, phrase in _bad_inputs(root):
        argv = ["evaluate", str(root / samples), "--reference", str(root / "reference.npz"),
                "--feature-extractor", TINY, "--no-cache", "--quiet", "--out", str(root / "bad.json"), *extra]
        if "--feature-extractor" in extra:
            argv[5] = extra[1]
            argv = argv[:-2]
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert phrase in err and err.startswith("error: ") and err.endswith(".") and "\n" not in err, (name, err)


def test_too_few_images_for_precision_recall(tmp_path, capsys):
    """k=3 neighbours need at least 4 images per set: refused with the fix (drop prc)."""
    np.savez(tmp_path / "three.npz", images(3))
    code, _ = evaluate_cli(tmp_path / "three.npz", tmp_path / "three.npz")
    assert code == 2 and "drop prc from --metrics" in capsys.readouterr().err
    code, report = evaluate_cli(tmp_path / "three.npz", tmp_path / "three.npz", "--metrics", "fid,isc,kid")
    assert code == 0 and report["settings"]["isc_splits"] == 3


def test_missing_library_says_how_to_install(sets, monkeypatch, capsys):
    """Without torch-fidelity the command says exactly what to pip install."""
    root, *_ = sets
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    code = main(["evaluate", str(root / "samples.npz"), "--reference", str(root / "reference.npz")])
    assert code == 2
    assert "pip install 'torch-fidelity==0.4.0'" in capsys.readouterr().err


def test_default_extractor_would_download_the_inception_and_says_where(sets, offline, capsys):
    """The default path is the real Inception: offline, it fails with the URL and the cache path, nothing fetched."""
    root, *_ = sets
    code = main(["evaluate", str(root / "samples.npz"), "--reference", str(root / "reference.npz"), "--no-cache",
                 "--quiet", "--out", str(root / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and offline == [evaluate.inception_weights_location()["url"]]
    offline.clear()
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "torch_home/hub/checkpoints" in err
    assert "--inception-weights FILE" in err


class NotWeights:
    """Any class: unpickling it needs more than torch's weights_only loader allows."""


def test_inception_weights_file_is_checked_before_use(sets, capsys):
    """--inception-weights refuses a pickle that is not a plain state dict, and one of another network."""
    root, *_ = sets
    torch.save({"model": NotWeights()}, root / "unsafe.pth")
    torch.save({"conv.weight": torch.zeros(1)}, root / "other.pth")
    for file, phrase in (("unsafe.pth", "is not a plain PyTorch state dict"), ("other.pth", "does not fit")):
        code = main(["evaluate", str(root / "samples.npz"), "--reference", str(root / "reference.npz"),
                     "--no-cache", "--quiet", "--inception-weights", str(root / file), "--out", str(root / "w.json")])
        err = capsys.readouterr().err
        assert code == 2 and phrase in err, err
