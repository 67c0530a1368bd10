"""benchmarks/panel_pool.py: pooled panels count as `panel score` counts, and the interval is honest."""

import csv
from pathlib import Path

import numpy as np
import pytest

from benchmarks import panel, panel_pool
from cag_core.class_names import imagenet_class_names

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "panel"
CLASSES = (1, 130, 207, 291, 407, 980)  # goldfish, flamingo, golden retriever, lion, ambulance, volcano


def _write_panel(folder: Path, viewers: int = 4, named=("b",), scores=None) -> None:
    """A one-per-class panel of methods a and b over CLASSES: viewer v sees class j in method
    (j + v) % 2. A method in `named` is always named by its class's first ImageNet name, the other
    always answered "a blur"; photo scores from `scores` (method -> score)."""
    names = imagenet_class_names()
    scores = scores or {"a": 2, "b": 4}
    folder.mkdir(parents=True)
    (folder / "rulings.txt").write_text("# none\n")
    for v in range(viewers):
        viewer = f"viewer_{v}"
        (folder / "keys" / viewer).mkdir(parents=True)
        key_rows, answer_rows = [], []
        for j, cls in enumerate(CLASSES):
            method, file = "ab"[(j + v) % 2], f"img_{j + 1:03d}.png"
            key_rows.append({"file": file, "method": method, "class": cls, "class_name": names[cls], "source": "x"})
            guess = names[cls].split(",")[0] if method in named else "a blur"
            answer_rows.append({"file": file, "guess": guess, "photo_score": scores[method]})
        for path, rows in ((folder / "keys" / viewer / "key.csv", key_rows), (folder / f"{viewer}.csv", answer_rows)):
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


def test_a_method_always_named_against_one_never_named_is_100_points_with_no_doubt(tmp_path):
    _write_panel(tmp_path / "draw1")
    _write_panel(tmp_path / "draw2", viewers=2)
    draws = [panel_pool.read_draw(tmp_path / d, ["a", "b"]) for d in ("draw1", "draw2")]
    summary = panel_pool.summarize(draws, ["a", "b"], replicates=500)
    pooled = summary["rows"][-1]
    assert pooled["methods"]["a"] == {"named": 0, "of": 18, "photo": 2.0}
    assert pooled["methods"]["b"] == {"named": 18, "of": 18, "photo": 4.0}
    assert pooled["named_points"] == 100 and pooled["named_points_95"] == pooled["named_points_95_classes"] == [100, 100]
    assert pooled["photo"] == 2 and pooled["photo_95"] == pooled["photo_95_classes"] == [2, 2]
    assert [r["draw"] for r in summary["rows"]] == ["draw1", "draw2", "pooled"]
    assert ("| pooled | 6 | 12 | 0 / 18 | 18 / 18 | 2.00 | 4.00 | +100.0 | +100.0 to +100.0; +100.0 to +100.0 | "
            "+2.00 | +2.00 to +2.00; +2.00 to +2.00 |") in panel_pool.report_markdown(summary)


def test_counts_agree_with_panel_score_on_the_stored_panels():
    """The pooled counts are the sum of what `panel score` counts on each stored panel (the same
    rulings, the same matching), and the three draws of the steeper spectrum pool to 138 against 132."""
    methods = ["steep_bn_alt_std36", "std_decay175"]
    folders = [RESULTS / f for f in ("heldout-steeper", "heldout-steeper2", "heldout-steeper3")]
    draws = [panel_pool.read_draw(folder, methods) for folder in folders]
    for folder, draw in zip(folders, draws):
        key_dirs = sorted((folder / "keys").iterdir())
        keys = {d.name: panel.read_key(d) for d in key_dirs}
        viewers = {v: panel.read_answers(folder / f"{v}.csv", set(k)) for v, k in keys.items()}
        report = panel.score(keys, viewers, panel.read_rulings(folder / "rulings.txt"), key_per_viewer=True)
        for i, method in enumerate(methods):
            assert draw.cells[:, :, i, panel_pool.NAMED].sum() == sum(c["named"] for c in report["methods"][method].values())
    summary = panel_pool.summarize(draws, methods, replicates=2000)
    pooled = summary["rows"][-1]
    assert (pooled["methods"][methods[0]]["named"], pooled["methods"][methods[1]]["named"]) == (138, 132)
    assert pooled["methods"][methods[0]]["of"] == pooled["methods"][methods[1]]["of"] == 256
    for interval in (pooled["named_points_95"], pooled["named_points_95_classes"]):
        assert interval[0] < pooled["named_points"] < interval[1] and interval[0] < 0 < interval[1]  # -2.3 points
    widths = [r["named_points_95"][1] - r["named_points_95"][0] for r in summary["rows"]]
    assert widths[-1] < min(widths[:-1])  # pooling three draws narrows the interval


def test_one_method_gives_its_own_share_and_score_with_intervals(tmp_path):
    """With one method: always named is 100 % with no doubt, never named 0 %; on the stored panels
    the default's share over the three steeper draws is its 138 of 256, inside its intervals."""
    _write_panel(tmp_path / "draw1")
    _write_panel(tmp_path / "draw2", viewers=2)
    draws = [panel_pool.read_draw(tmp_path / d, ["b"]) for d in ("draw1", "draw2")]
    pooled = panel_pool.summarize(draws, ["b"], replicates=300)["rows"][-1]
    assert pooled["methods"]["b"] == {"named": 18, "of": 18, "photo": 4.0}
    assert pooled["named_share"] == 100 and pooled["named_share_95"] == pooled["named_share_95_classes"] == [100, 100]
    assert pooled["photo"] == 4 and pooled["photo_95"] == [4, 4]
    never = panel_pool.summarize([panel_pool.read_draw(tmp_path / "draw1", ["a"])], ["a"], replicates=300)
    assert never["rows"][-1]["named_share"] == 0 and never["rows"][-1]["named_share_95"] == [0, 0]
    assert "| pooled | 4 | 6 | 0 / 12 | 0.0 | 0.0 to 0.0; 0.0 to 0.0 | 2.00 |" in panel_pool.report_markdown(never)

    folders = [RESULTS / f for f in ("heldout-steeper", "heldout-steeper2", "heldout-steeper3")]
    summary = panel_pool.summarize([panel_pool.read_draw(f, ["steep_bn_alt_std36"]) for f in folders],
                                   ["steep_bn_alt_std36"], replicates=2000)
    pooled = summary["rows"][-1]
    assert pooled["methods"]["steep_bn_alt_std36"]["named"] == 138 and pooled["named_share"] == round(100 * 138 / 256, 2)
    for interval in (pooled["named_share_95"], pooled["named_share_95_classes"]):
        assert 0 < interval[0] < pooled["named_share"] < interval[1] < 100
    assert pooled["photo_95"][0] < pooled["photo"] < pooled["photo_95"][1]
    # resampling the viewers too can only widen the interval (up to the bootstrap's own noise)
    width = [pooled[k][1] - pooled[k][0] for k in ("named_share_95", "named_share_95_classes")]
    assert width[0] > 0.9 * width[1]


def test_the_intervals_hold_a_null_effect_about_95_times_in_100():
    """Simulated panels where both methods are named equally often, with classes and viewers that
    differ (some classes are easy, some viewers generous): the classes-and-viewers interval holds 0
    in at least 95 of 100 panels (it errs wide), the classes-only interval in at least 88 and never
    more often than the wider one (the module's docstring gives 100 and 94, this simulation)."""
    rng = np.random.default_rng(7)
    held = {True: 0, False: 0}
    for _ in range(100):
        n_viewers, n_classes = 8, 16
        logit = rng.normal(0.5, 1.5, n_classes)[None, :] + rng.normal(0, 0.7, n_viewers)[:, None]
        named = rng.random((n_viewers, n_classes)) < 1 / (1 + np.exp(-logit))
        method = (np.arange(n_classes)[None, :] + np.arange(n_viewers)[:, None]) % 2
        cells = np.zeros((n_viewers, n_classes, 2, 4))
        for v in range(n_viewers):
            for c in range(n_classes):
                cells[v, c, method[v, c]] = (1, named[v, c], 1, 3)
        seed = int(rng.integers(1 << 30))
        for viewers in held:
            share, _ = panel_pool.bootstrap([panel_pool.Draw("sim", [], [], cells)], 400, seed, viewers=viewers)
            lo, hi = np.percentile(share, [2.5, 97.5])
            held[viewers] += bool(lo <= 0 <= hi)
    assert held[True] >= 95 and 88 <= held[False] <= held[True], held


def test_viewers_are_resampled_within_their_part_of_the_latin_square():
    """Two methods with the same images (a paired design) and names that depend only on the class:
    every resample keeps as many viewers of each part as the design had, so each class is guessed
    as often in either method and the difference is 0 in every replicate; drawing the viewers
    across parts would pit the easy classes against the hard ones."""
    n_viewers, n_classes = 4, 6
    method = (np.arange(n_classes)[None, :] + np.arange(n_viewers)[:, None]) % 2
    cells = np.zeros((n_viewers, n_classes, 2, 4))
    for v in range(n_viewers):
        for c in range(n_classes):
            cells[v, c, method[v, c]] = (1, c < 3, 1, 2 + (c < 3))
    draw = panel_pool.Draw("paired", [], [], cells)
    assert sorted(map(list, panel_pool.design_groups(cells))) == [[0, 2], [1, 3]]
    share, photo = panel_pool.bootstrap([draw], replicates=300, seed=1)
    assert np.all(share == 0) and np.all(photo == 0)


def test_refusals_name_the_folder_and_what_it_holds(tmp_path):
    _write_panel(tmp_path / "draw")
    with pytest.raises(SystemExit, match=r"draw: no images of \['c'\] in its keys; its methods are \['a', 'b'\]"):
        panel_pool.read_draw(tmp_path / "draw", ["a", "c"])
    with pytest.raises(SystemExit, match="no keys/<viewer>/key.csv"):
        panel_pool.read_draw(tmp_path, ["a", "b"])
    (tmp_path / "draw" / "viewer_0.csv").unlink()
    with pytest.raises(SystemExit, match="keys/viewer_0 has no answers viewer_0.csv"):
        panel_pool.read_draw(tmp_path / "draw", ["a", "b"])
    for methods in ("a,a", "a,b,c", ","):
        with pytest.raises(SystemExit, match="one name, or two different names"):
            panel_pool.main(["--panels", str(tmp_path / "draw"), "--methods", methods])


def test_command_line_writes_the_report_and_its_json(tmp_path):
    _write_panel(tmp_path / "draw")
    assert panel_pool.main(["--panels", str(tmp_path / "draw"), "--methods", "a,b", "--replicates", "200",
                            "--out", str(tmp_path / "out" / "pooled.md")]) == 0
    assert "`b` against `a`" in (tmp_path / "out" / "pooled.md").read_text()
    assert (tmp_path / "out" / "pooled.json").exists()
