"""benchmarks/panel.py: the blind panel hides method and class, keeps its key apart, and scores exactly."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from benchmarks import panel

ROOT = Path(__file__).resolve().parents[1]
# tabby ("tabby, tabby cat"), golden retriever, agaric, yawl
CLASSES = (281, 207, 992, 914)
METHODS = ("ours", "lucent-defaults")


def _color(method: str, cls: int) -> tuple[int, int, int]:
    return (METHODS.index(method) * 100 + 20, CLASSES.index(cls) * 50 + 10, 7)


def _make_images(root: Path) -> Path:
    """Solid-colour images, one colour per (method, class), of different sizes per method, each
    carrying its method's name in a PNG text chunk (which the panel must not pass on)."""
    images = root / "images"
    for m, method in enumerate(METHODS):
        for cls in CLASSES:
            path = images / method / f"{cls}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            info = PngImagePlugin.PngInfo()
            info.add_text("method", method)
            Image.new("RGB", (16 + 8 * m, 16 + 8 * m), _color(method, cls)).save(path, pnginfo=info)
    (images / "ours" / "notes.txt").write_text("not an image")
    return images


@pytest.fixture
def prepared(tmp_path):
    images = _make_images(tmp_path)
    rows = panel.prepare(images, tmp_path / "panel", tmp_path / "key", seed=3, side=32)
    return tmp_path, rows


def _key_rows(key: Path) -> list[dict]:
    with (key / panel.KEY_FILE).open(newline="") as f:
        return list(csv.DictReader(f))


def test_panel_folder_holds_only_neutral_images_and_the_key_is_elsewhere(prepared):
    """The panel has exactly one img_NNN.png per source image, nothing else; the key is outside it."""
    tmp, rows = prepared
    files = sorted(p.name for p in (tmp / "panel").iterdir())
    assert files == [f"img_{k:03d}.png" for k in range(1, len(METHODS) * len(CLASSES) + 1)]
    assert sorted(p.name for p in (tmp / "key").iterdir()) == sorted(
        [panel.KEY_FILE, panel.TEMPLATE_FILE, panel.META_FILE])
    assert len(rows) == len(files)


def test_panel_images_hide_method_and_class_but_match_the_key(prepared):
    """Every panel image has the common size and no text chunk, and shows the source the key names."""
    tmp, _ = prepared
    for row in _key_rows(tmp / "key"):
        image = Image.open(tmp / "panel" / row["file"])
        assert image.size == (32, 32)
        assert "method" not in image.info and not getattr(image, "text", {})
        assert image.convert("RGB").getpixel((16, 16)) == _color(row["method"], int(row["class"]))


def test_shuffle_is_seeded_and_not_the_sorted_order(tmp_path):
    images = _make_images(tmp_path)
    orders = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        panel.prepare(images, tmp_path / f"panel_{name}", tmp_path / f"key_{name}", seed=seed, side=0)
        orders.append([(r["method"], r["class"]) for r in _key_rows(tmp_path / f"key_{name}")])
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]
    sorted_order = [(m, str(c)) for m in sorted(METHODS) for c in sorted(CLASSES)]
    assert orders[0] != sorted_order and sorted(orders[0]) == sorted(sorted_order)


def test_prepare_refuses_a_key_inside_the_panel_and_a_non_empty_panel(tmp_path):
    images = _make_images(tmp_path)
    with pytest.raises(SystemExit, match="inside"):
        panel.prepare(images, tmp_path / "panel", tmp_path / "panel" / "key")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.png").write_bytes(b"")
    with pytest.raises(SystemExit, match="not empty"):
        panel.prepare(images, tmp_path / "busy", tmp_path / "key")


def test_guess_matching():
    """Names, synonyms, plurals and run-together words count; a generic kind does not."""
    tabby, retriever, yawl = "tabby, tabby cat", "golden retriever", "yawl"
    assert panel.judge_guess("a Tabby-Cat on a sofa", tabby) == ("name", "tabby")
    assert panel.judge_guess("two golden retrievers", retriever) == ("name", "golden retriever")
    assert panel.judge_guess("goldenretriever", retriever) == ("name", "golden retriever")
    assert panel.judge_guess("a retriever", retriever) is None
    assert panel.judge_guess("a dog", retriever) is None
    assert panel.judge_guess("cat", tabby) is None
    assert panel.judge_guess("tabbycats", tabby) == ("name", "tabby cat")
    assert panel.judge_guess("a yawlish shape", yawl) is None  # whole words only
    assert panel.judge_guess("a sail boat", yawl, ["sailboat"]) == ("ruling", "sailboat")
    assert panel.phrase_in("sailboats at sea", "sail boat")


def test_rulings_file_format(tmp_path):
    path = tmp_path / "rulings.txt"
    path.write_text("# accepted words\n992 agaric: mushroom, toadstool\n\n914: sailboat  # the kind\n992: fungus\n")
    assert panel.read_rulings(path) == {992: ["mushroom", "toadstool", "fungus"], 914: ["sailboat"]}
    path.write_text("mushroom for agaric\n")
    with pytest.raises(SystemExit, match="CLASS: word"):
        panel.read_rulings(path)


def _answers(path: Path, key_rows: list[dict], guesses: dict[tuple[str, int], tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(panel.ANSWER_COLUMNS)
        for row in key_rows:
            entry = guesses.get((row["method"], int(row["class"])))
            if entry is not None:
                writer.writerow([row["file"], *entry])
    return path


def test_score_counts_exactly(prepared):
    """Two viewers: auto-matched names, a ruling, generic guesses, a missing answer, per method."""
    tmp, _ = prepared
    key_rows = _key_rows(tmp / "key")
    anna = _answers(tmp / "anna.csv", key_rows, {
        ("ours", 281): ("a tabby cat", "3"),  # name
        ("ours", 207): ("golden retrievers playing", "4"),  # name, plural
        ("ours", 992): ("mushroom", "2"),  # ruling
        ("ours", 914): ("a sailboat", "1"),  # unmatched: no ruling for 914
        ("lucent-defaults", 281): ("cat", "1"),  # generic: unmatched
        ("lucent-defaults", 207): ("dog", "2"),  # generic: unmatched
        ("lucent-defaults", 992): ("?", "1"),  # no guess
        # ("lucent-defaults", 914) not answered at all
    })
    ben = _answers(tmp / "ben.csv", key_rows, {
        ("ours", 281): ("texture", "1"),
        ("lucent-defaults", 914): ("yawl", "5"),
        ("lucent-defaults", 992): ("toadstools", ""),  # ruling, plural; no photo score
    })
    rulings = tmp / "rulings.txt"
    rulings.write_text("992: mushroom, toadstool\n")
    key = panel.read_key(tmp / "key")
    viewers = {p.stem: panel.read_answers(p, set(key)) for p in (anna, ben)}
    report = panel.score(key, viewers, panel.read_rulings(rulings))
    ours, lucent = report["methods"]["ours"], report["methods"]["lucent-defaults"]
    assert (ours["anna"]["named"], ours["anna"]["of"], ours["anna"]["photo_score"]) == (3, 4, 2.5)
    assert (lucent["anna"]["named"], lucent["anna"]["of"], lucent["anna"]["unanswered"]) == (0, 4, 2)
    assert lucent["anna"]["photo_score"] == pytest.approx(4 / 3, abs=0.01)
    assert (ours["ben"]["named"], ours["ben"]["photo_score"], ours["ben"]["unanswered"]) == (0, 1, 3)
    assert (lucent["ben"]["named"], lucent["ben"]["photo_score"], lucent["ben"]["photo_scored"]) == (2, 5, 1)
    ruled = {(r["viewer"], r["guess"]) for r in report["accepted_by_ruling"]}
    assert ruled == {("anna", "mushroom"), ("ben", "toadstools")}
    unmatched = {(r["viewer"], r["guess"]) for r in report["unmatched"]}
    assert unmatched == {("anna", "a sailboat"), ("anna", "cat"), ("anna", "dog"), ("ben", "texture")}
    text = panel.report_markdown(report, {"ours": 29.0})
    assert "| ours | 3/4 | 2.5 | 0/4 (3 no guess) | 1 | 29.0 |" in text
    assert '"mushroom" (ruling: mushroom)' in text


def test_answers_are_validated(prepared, tmp_path):
    tmp, _ = prepared
    files = set(panel.read_key(tmp / "key"))
    bad = tmp_path / "bad.csv"
    bad.write_text("file,guess,photo_score\nimg_001.png,cat,7\n")
    with pytest.raises(SystemExit, match="1 to 5"):
        panel.read_answers(bad, files)
    bad.write_text("file,guess,photo_score\nimg_999.png,cat,2\n")
    with pytest.raises(SystemExit, match="not an image"):
        panel.read_answers(bad, files)
    bad.write_text("file,guess\nimg_001.png,cat\n")
    with pytest.raises(SystemExit, match="header"):
        panel.read_answers(bad, files)


def test_panel_does_not_import_the_peers(prepared):
    """The whole command line runs with the peer libraries made unimportable."""
    tmp, _ = prepared
    blocker = tmp / "blocker"
    blocker.mkdir()
    for name in ("lucent", "horama", "torch_dreams", "brisque", "kornia"):
        (blocker / f"{name}.py").write_text(f"raise ImportError('{name} must not be imported by the panel')\n")
    answers = tmp / "anna.csv"
    answers.write_text("file,guess,photo_score\nimg_001.png,cat,2\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import panel; "
            "sys.exit(panel.main(['score', '--key', sys.argv[2], '--answers', sys.argv[3]]))")
    result = subprocess.run([sys.executable, "-c", code, str(blocker), str(tmp / "key"), str(answers)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| lucent-defaults |" in result.stdout


def test_one_per_class_is_a_latin_square(tmp_path):
    """Each part shows every class once; the methods alternate over a seeded class order; the parts
    together hold every image exactly once; the key and the panel agree."""
    images = _make_images(tmp_path)
    sources = panel.find_sources(images)
    parts = [panel.one_per_class(sources, part, seed=5) for part in range(len(METHODS))]
    for chosen in parts:
        assert sorted(s.cls for s in chosen) == sorted(CLASSES)
        counts = [sum(s.method == m for s in chosen) for m in METHODS]
        assert counts == [len(CLASSES) // len(METHODS)] * len(METHODS)
    assert sorted((s.method, s.cls) for chosen in parts for s in chosen) == sorted(
        (m, c) for m in METHODS for c in CLASSES)
    assert [s.cls for s in parts[0]] == [s.cls for s in panel.one_per_class(sources, 0, seed=5)]  # seeded
    orders = {tuple(s.cls for s in panel.one_per_class(sources, 0, seed=k)) for k in range(8)}
    assert len(orders) > 1  # the seed moves the class order
    rows = panel.prepare(images, tmp_path / "panel", tmp_path / "key", seed=1, side=32, part=1, part_seed=5)
    assert {(r["method"], r["class"]) for r in rows} == {(s.method, s.cls) for s in parts[1]}
    assert len(list((tmp_path / "panel").iterdir())) == len(CLASSES)
    with pytest.raises(SystemExit, match="between 0 and 1"):
        panel.one_per_class(sources, 2)
    (images / "ours" / f"{CLASSES[0]}.png").unlink()
    with pytest.raises(SystemExit, match="every class from every method"):
        panel.one_per_class(panel.find_sources(images), 0)


def test_score_pairs_each_viewer_with_their_own_key(tmp_path):
    """Viewers of separate panels (the two parts of --one-per-class): `score --key K1 K2 --answers A1 A2`
    scores each viewer against their own key; one key for several viewers still works; a count that
    pairs neither way is refused."""
    images = _make_images(tmp_path)
    answers = []
    for part, viewer in enumerate(("anna", "ben")):
        panel.prepare(images, tmp_path / f"panel{part}", tmp_path / f"key{part}", seed=part, side=16, part=part,
                      part_seed=2)
        rows = _key_rows(tmp_path / f"key{part}")
        # each viewer names exactly the images of 'ours' in their own panel
        answers.append(_answers(tmp_path / f"{viewer}.csv", rows,
                                {(r["method"], int(r["class"])): ("a tabby cat" if int(r["class"]) == 281 else
                                                                   "golden retriever" if int(r["class"]) == 207 else
                                                                   "agaric" if int(r["class"]) == 992 else "yawl", "3")
                                 for r in rows if r["method"] == "ours"}))
    out = tmp_path / "report.md"
    assert panel.main(["score", "--key", str(tmp_path / "key0"), str(tmp_path / "key1"),
                       "--answers", *map(str, answers), "--out", str(out)]) == 0
    import json

    report = json.loads(out.with_suffix(".json").read_text())
    for viewer in ("anna", "ben"):
        assert report["methods"]["ours"][viewer] == {"named": 2, "of": 2, "unanswered": 0, "photo_score": 3,
                                                     "photo_scored": 2}
        assert report["methods"]["lucent-defaults"][viewer]["named"] == 0
        assert report["methods"]["lucent-defaults"][viewer]["of"] == 2
    # ben's answers against anna's key: his file names exist there, but they show other images
    assert panel.main(["score", "--key", str(tmp_path / "key0"), "--answers", *map(str, answers)]) == 0
    with pytest.raises(SystemExit, match="one per --answers file"):
        panel.main(["score", "--key", str(tmp_path / "key0"), str(tmp_path / "key1"), str(tmp_path / "key1"),
                    "--answers", *map(str, answers)])
