"""Pool the blind panels of several held-out draws and put an interval on what one recipe changes,
or on how often one recipe is named.

    python -m benchmarks.panel_pool --methods steep_bn_alt_std36,std_decay175 \\
        --panels benchmarks/results/panel/heldout-steeper benchmarks/results/panel/heldout-steeper2 \\
                 benchmarks/results/panel/heldout-steeper3 [--out pooled.md]
    python -m benchmarks.panel_pool --methods steep_bn_alt_std36 --panels benchmarks/results/panel/heldout-*

Each --panels folder is one scored panel as `benchmarks.panel` leaves it: `keys/<viewer>/key.csv`,
`<viewer>.csv` (that viewer's answers) and `rulings.txt`. Guesses are judged exactly as `panel
score` judges them. The report gives, per draw and over all, each method's named guesses (of how
many) and mean photo score, and the second method minus the first: the difference in the share of
guesses that named the class (percentage points) and in the mean photo score, each with a 95 %
bootstrap interval. With one method it gives that method's share of guesses that named the class
and its mean photo score, each with the same intervals: where a recipe stands against a bar.

Why an interval: on single draws of 16 classes the default alone was named from 33 to 55 of 64
guesses; which classes are drawn moves the count more than any recipe change measured, and four
tuning-panel gains in a row vanished held out. Two bootstraps, each within every draw (the draws
are strata: each has its own classes and viewers), with replacement, every guess of a resampled
class (and viewer) coming along:
- classes and viewers, independently (a pigeonhole bootstrap), each viewer within its design group
  (the viewers shown the same methods for the same classes: one part of a Latin square has a fixed
  number of viewers, and drawing more of one part would pit half the classes against the other
  half): it errs wide (on simulated panels with no effect it held 0 in 100 of 100), so a
  difference it excludes 0 from is measured;
- classes only, the viewers kept as they were: narrower, about right when the viewers' leanings
  cancel, as they do when each viewer sees both methods (94 of 100 on the same simulation).
A difference whose interval holds 0 was not measured.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.panel import judge_all, read_answers, read_key, read_rulings, write_report

# Per (viewer, class, method) cell: guesses shown, guesses that named the class, photo scores given
# and their sum. A viewer of a one-per-class panel has one guess per class; of a full panel, one per
# class and method.
SHOWN, NAMED, SCORED, SCORE_SUM = range(4)


@dataclass
class Draw:
    name: str
    viewers: list[str]
    classes: list[int]
    cells: np.ndarray  # [viewers, classes, methods, 4]


def read_draw(folder: Path, methods: Sequence[str]) -> Draw:
    """One scored panel folder as counts per viewer, class and method (methods in the given order)."""
    key_dirs = sorted(p for p in (folder / "keys").glob("*") if (p / "key.csv").exists())
    if not key_dirs:
        raise SystemExit(f"{folder}: no keys/<viewer>/key.csv (a folder scored with `benchmarks.panel score`).")
    keys, answers = {}, {}
    for key_dir in key_dirs:
        viewer = key_dir.name
        keys[viewer] = read_key(key_dir)
        answers_path = folder / f"{viewer}.csv"
        if not answers_path.exists():
            raise SystemExit(f"{folder}: keys/{viewer} has no answers {answers_path.name} beside it.")
        answers[viewer] = read_answers(answers_path, set(keys[viewer]))
    rulings = read_rulings(folder / "rulings.txt" if (folder / "rulings.txt").exists() else None)
    judged = judge_all(keys, answers, rulings)
    found = sorted({g.method for g in judged})
    missing = [m for m in methods if m not in found]
    if missing:
        raise SystemExit(f"{folder}: no images of {missing} in its keys; its methods are {found}.")
    viewers = sorted(keys)
    classes = sorted({g.cls for g in judged})
    viewer_at, class_at = {v: i for i, v in enumerate(viewers)}, {c: i for i, c in enumerate(classes)}
    method_at = {m: i for i, m in enumerate(methods)}
    cells = np.zeros((len(viewers), len(classes), len(methods), 4))
    for g in judged:
        if g.method not in method_at:
            continue
        cell = cells[viewer_at[g.viewer], class_at[g.cls], method_at[g.method]]
        cell[SHOWN] += 1
        cell[NAMED] += g.verdict is not None
        if g.answer is not None and g.answer.score is not None:
            cell[SCORED] += 1
            cell[SCORE_SUM] += g.answer.score
    return Draw(folder.resolve().name, viewers, classes, cells)


def _levels(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """totals [..., methods, 4] -> (each method's share of guesses that named the class, in percent;
    its mean photo score), both [..., methods]."""
    share = totals[..., NAMED] / np.maximum(totals[..., SHOWN], 1)
    photo = totals[..., SCORE_SUM] / np.maximum(totals[..., SCORED], 1)
    return 100 * share, photo


def _effects(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """totals [..., methods, 4] -> (named share of the second method minus the first, in points;
    mean photo score of the second minus the first)."""
    share, photo = _levels(totals)
    return share[..., 1] - share[..., 0], photo[..., 1] - photo[..., 0]


def design_groups(cells: np.ndarray) -> list[np.ndarray]:
    """The viewers grouped by what they were shown: the same methods for the same classes (one part
    of a Latin square; or everything, in a full panel). Each group's size was fixed by the design."""
    groups: dict[bytes, list[int]] = {}
    for viewer, shown in enumerate(cells[..., SHOWN] > 0):
        groups.setdefault(shown.tobytes(), []).append(viewer)
    return [np.array(members) for members in groups.values()]


def bootstrap_totals(draws: Sequence[Draw], replicates: int = 10000, seed: int = 0,
                     viewers: bool = True) -> np.ndarray:
    """The pooled counts [replicates, methods, 4] of `replicates` resamples: within each draw the
    classes (and, with `viewers`, independently the viewers, each within its design group) drawn
    with replacement."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for draw in draws:
        n_viewers, n_classes = draw.cells.shape[:2]
        # How often each viewer and each class is drawn: a resample's sum over its (viewer, class)
        # pairs is the count-weighted sum over the cells.
        viewer_counts = np.ones((replicates, n_viewers))
        if viewers:
            # Within a design group only: drawing more viewers of one part of a Latin square than
            # the design had would pit one half of the classes against the other.
            for members in design_groups(draw.cells):
                viewer_counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)),
                                                            size=replicates)
        class_counts = rng.multinomial(n_classes, np.full(n_classes, 1 / n_classes), size=replicates)
        total = total + np.einsum("bv,vcmk,bc->bmk", viewer_counts, draw.cells, class_counts)
    return total


def bootstrap(draws: Sequence[Draw], replicates: int = 10000, seed: int = 0,
              viewers: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The second method minus the first over the resamples of `bootstrap_totals`:
    (share differences in points, photo differences), one per replicate."""
    return _effects(bootstrap_totals(draws, replicates, seed, viewers))


def summarize(draws: Sequence[Draw], methods: Sequence[str], replicates: int = 10000, seed: int = 0) -> dict:
    # One method: where it stands (its share named, in percent, and its photo score); two: the
    # second minus the first (points, photo score).
    if len(methods) == 1:
        key = "named_share"

        def statistic(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            share, photo = _levels(totals)
            return share[..., 0], photo[..., 0]
    else:
        key, statistic = "named_points", _effects

    def per_method(totals: np.ndarray) -> dict:
        _, photo = _levels(totals)
        return {m: {"named": int(totals[i, NAMED]), "of": int(totals[i, SHOWN]), "photo": round(float(photo[i]), 3)}
                for i, m in enumerate(methods)}

    def interval(values: np.ndarray, digits: int) -> list[float]:
        return [round(float(q), digits) for q in np.percentile(values, [2.5, 97.5])]

    def row(name: str, parts: Sequence[Draw], offset: int) -> dict:
        totals = sum(d.cells.sum(axis=(0, 1)) for d in parts)
        share, photo = statistic(totals)
        both_share, both_photo = statistic(bootstrap_totals(parts, replicates, seed + offset))
        class_share, class_photo = statistic(bootstrap_totals(parts, replicates, seed + offset, viewers=False))
        return {"draw": name, "viewers": sum(len(d.viewers) for d in parts),
                "classes": sum(len(d.classes) for d in parts), "methods": per_method(totals),
                key: round(float(share), 2), f"{key}_95": interval(both_share, 2),
                f"{key}_95_classes": interval(class_share, 2),
                "photo": round(float(photo), 3), "photo_95": interval(both_photo, 3),
                "photo_95_classes": interval(class_photo, 3)}

    rows = [row(d.name, [d], i + 1) for i, d in enumerate(draws)] + [row("pooled", draws, 0)]
    return {"methods": list(methods), "replicates": replicates, "seed": seed, "rows": rows}


def _span(values: list[float], fmt: str) -> str:
    return f"{values[0]:{fmt}} to {values[1]:{fmt}}"


def level_markdown(summary: dict) -> str:
    """The report of one method: its share of guesses that named the class and its photo score."""
    (a,) = summary["methods"]
    lines = [f"# Pooled blind panels: `{a}`", "",
             f"The share of {a}'s guesses that named the class and its mean photo score, each with two 95 % "
             f"intervals from {summary['replicates']} bootstrap resamples within each draw: of the classes and "
             "viewers (errs wide), then of the classes only (benchmarks/panel_pool.py says why).", "",
             "| draw | viewers | classes | named | named, % | 95 %: classes and viewers; classes | photo | "
             "95 %: classes and viewers; classes |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        m = row["methods"][a]
        lines.append(f"| {row['draw']} | {row['viewers']} | {row['classes']} | {m['named']} / {m['of']} | "
                     f"{row['named_share']:.1f} | {_span(row['named_share_95'], '.1f')}; "
                     f"{_span(row['named_share_95_classes'], '.1f')} | {row['photo']:.2f} | "
                     f"{_span(row['photo_95'], '.2f')}; {_span(row['photo_95_classes'], '.2f')} |")
    return "\n".join(lines) + "\n"


def report_markdown(summary: dict) -> str:
    if len(summary["methods"]) == 1:
        return level_markdown(summary)
    a, b = summary["methods"]
    lines = [f"# Pooled blind panels: `{b}` against `{a}`", "",
             f"{b} minus {a}: the share of guesses that named the class (points) and the mean photo score, each with "
             f"two 95 % intervals from {summary['replicates']} bootstrap resamples within each draw: of the classes "
             "and viewers (errs wide), then of the classes only (benchmarks/panel_pool.py says why).", "",
             f"| draw | viewers | classes | {a} named | {b} named | {a} photo | {b} photo | named, points | "
             "95 %: classes and viewers; classes | photo | 95 %: classes and viewers; classes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    for row in summary["rows"]:
        ma, mb = row["methods"][a], row["methods"][b]
        lines.append(f"| {row['draw']} | {row['viewers']} | {row['classes']} | {ma['named']} / {ma['of']} | "
                     f"{mb['named']} / {mb['of']} | {ma['photo']:.2f} | {mb['photo']:.2f} | {row['named_points']:+.1f} | "
                     f"{_span(row['named_points_95'], '+.1f')}; {_span(row['named_points_95_classes'], '+.1f')} | "
                     f"{row['photo']:+.2f} | {_span(row['photo_95'], '+.2f')}; {_span(row['photo_95_classes'], '+.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panels", type=Path, nargs="+", required=True, help="scored panel folders, one per draw")
    parser.add_argument("--methods", required=True,
                        help="two method names, the reference first: A,B reports B - A; or one name: A's own share and score")
    parser.add_argument("--replicates", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the report here (.md; a .json beside it)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if len(methods) not in (1, 2) or len(set(methods)) != len(methods):
        raise SystemExit(f"--methods: one name, or two different names with the reference first (A,B); "
                         f"got '{args.methods}'.")
    if args.replicates < 100:
        raise SystemExit(f"--replicates: at least 100 for a 95 % interval; got {args.replicates}.")
    summary = summarize([read_draw(folder, methods) for folder in args.panels], methods, args.replicates, args.seed)
    write_report(report_markdown(summary), summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
