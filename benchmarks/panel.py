"""The blind panel as a measurement: can people name what each method's images show, and do they
look like photos?

    python -m benchmarks.panel prepare --images benchmarks/results/peers/images \\
        --panel /path/panel --key /path/panel-key            # shuffled, neutral names; key kept apart
    python -m benchmarks.panel instructions --panel /path/panel  # the brief to give each viewer
    python -m benchmarks.panel score --key /path/panel-key --answers anna.csv ben.csv \\
        [--rulings rulings.txt] [--peers benchmarks/results/peers/results.json] [--out report.md]

prepare: every `<method>/<class index>.png` under --images (benchmarks/peers.py writes them) is
re-encoded (no metadata) at one common side (--side, default 512, so the size gives no method
away) into --panel as img_001.png, img_002.png, ... in a seeded shuffle; --panel holds nothing
else. The key (key.csv: file -> method, class), the panel's settings (panel.json) and an answers
template (answers_template.csv: file names only, safe to hand out) go to --key, outside --panel.
`--one-per-class PART` keeps each class once, in one method (part PART of a Latin square over the
methods; with M methods, parts 0..M-1 with one --part-seed hold every image once): a viewer then
never sees a class twice, so one method's image cannot name the class for another's.

score: reads one answers CSV per viewer (header `file,guess,photo_score`; the viewer is the file's
stem) and reports per method and viewer how many images were named correctly (of how many) and the
mean photo score (1 = abstract texture, 3 = recognizable but strange, 5 = a photo). A guess counts
when it contains one of the class's ImageNet names ("tabby, tabby cat": either), whole words,
plurals and run-together spellings allowed ("sail boat" = "sailboat"); a generic kind ("dog" for a
breed, "mushroom" for agaric) counts only by a person's ruling: --rulings lists, one line per
class, the words accepted for it (`992: mushroom, toadstool`; `#` starts a comment; text between
the index and the colon is ignored, e.g. `992 agaric: mushroom`). The report lists the guesses
accepted by ruling and every unmatched guess, for the next ruling. With --peers (the results.json
of benchmarks/peers.py) it adds each method's median BRISQUE.

This module must not import the peer libraries (its tests run in CI without them).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import random
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

KEY_FILE, TEMPLATE_FILE, META_FILE = "key.csv", "answers_template.csv", "panel.json"
ANSWER_COLUMNS = ("file", "guess", "photo_score")
NO_GUESS = {"", "?", "-", "none", "nothing", "no idea", "don't know", "dont know"}

INSTRUCTIONS = """\
You are given one folder of {count} images, {first} to {last}. A computer program made each of
them; each was meant to show one ordinary thing (an animal, a plant, an object, a food, a place...).
Nothing else about them is known to you, and nothing in their names or order is a hint.

For each image, on its own:
  1. guess: write in a few words what it shows ("a red sports car", "a bird on a branch"). Be as
     specific as you can ("a beagle" rather than "a dog", if you can tell); if you are not sure,
     write your best guess; if you have no idea at all, write ?
  2. photo_score: how much it looks like a photograph, a whole number from 1 to 5:
       1 = abstract texture or pattern
       2 = between 1 and 3
       3 = recognizable but strange
       4 = between 3 and 5
       5 = a photo
Spend about as long on each image as you need to form a first impression (10-20 seconds); do not
search the web or use any tool on the images, and do not discuss them with other viewers.

Answer in a CSV file (a spreadsheet saved as CSV works), one row per image, with this header:

file,guess,photo_score
{first},a red sports car,2
...

Put a guess that contains a comma in double quotes. Send the file back named after yourself
(e.g. anna.csv).
"""


# ---- prepare -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    method: str
    cls: int
    path: Path


def find_sources(images: Path, methods: Sequence[str] | None = None) -> list[Source]:
    """Every <method>/<class>.png under `images`, sorted by method then class."""
    if not images.is_dir():
        raise SystemExit(f"--images {images}: not a folder (benchmarks/peers.py writes <out>/images/<method>/).")
    folders = sorted(p for p in images.iterdir() if p.is_dir())
    if methods:
        known = {p.name for p in folders}
        missing = [m for m in methods if m not in known]
        if missing:
            raise SystemExit(f"--methods {missing}: no such folder in {images}; there are: {', '.join(sorted(known))}.")
        folders = [images / m for m in methods]
    sources = []
    for folder in folders:
        for path in sorted(folder.glob("*.png"), key=lambda p: (len(p.stem), p.stem)):
            if path.stem.isdigit():
                sources.append(Source(folder.name, int(path.stem), path))
    if not sources:
        raise SystemExit(f"No <method>/<class index>.png images under {images}.")
    return sources


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def one_per_class(sources: Sequence[Source], part: int, seed: int = 0) -> list[Source]:
    """Part `part` of a Latin square over the methods: each class once, in one method.

    The classes are put in a seeded order; class j of that order keeps only its image from method
    (j + part) mod M (methods sorted by name). So each part holds every class exactly once and
    each method about equally often, and parts 0..M-1 together hold every image exactly once. A
    viewer who sees one part never meets a class twice: no image of one method can name the class
    for another method's image (the design of a full panel, where each viewer sees every class
    once per method, lets it). Every class must have an image from every method.
    """
    methods = sorted({s.method for s in sources})
    if not 0 <= part < len(methods):
        raise SystemExit(f"--one-per-class {part}: a part between 0 and {len(methods) - 1} ({len(methods)} methods).")
    by_key = {(s.method, s.cls): s for s in sources}
    classes = sorted({s.cls for s in sources})
    missing = [(m, c) for m in methods for c in classes if (m, c) not in by_key]
    if missing:
        raise SystemExit(f"--one-per-class needs every class from every method; missing (method, class): {missing[:5]}.")
    random.Random(f"one-per-class {seed}").shuffle(classes)
    return [by_key[(methods[(j + part) % len(methods)], cls)] for j, cls in enumerate(classes)]


def prepare(images: Path, panel: Path, key: Path, *, seed: int = 0, side: int = 512,
            methods: Sequence[str] | None = None, part: int | None = None, part_seed: int = 0) -> list[dict]:
    """part: keep only that part of `one_per_class` (ordered by part_seed), so each viewer sees
    every class once; None: every image of every method."""
    from PIL import Image

    from cag_core.class_names import imagenet_class_names

    if _inside(key, panel):
        raise SystemExit(f"--key {key} is inside --panel {panel}: the viewers would see the key. Put it elsewhere.")
    if panel.exists() and any(panel.iterdir()):
        raise SystemExit(f"--panel {panel} is not empty; the panel folder must hold the panel's images only.")
    if key.exists() and (key / KEY_FILE).exists():
        raise SystemExit(f"--key {key} already holds a {KEY_FILE}; choose a new folder (a key must not be overwritten).")
    sources = find_sources(images, methods)
    if part is not None:
        sources = one_per_class(sources, part, part_seed)
    names = imagenet_class_names()
    order = list(sources)
    random.Random(seed).shuffle(order)
    digits = max(3, len(str(len(order))))
    panel.mkdir(parents=True, exist_ok=True)
    key.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, source in enumerate(order, start=1):
        file = f"img_{k:0{digits}d}.png"
        image = Image.open(source.path).convert("RGB")
        if side:
            scale = side / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        Image.frombytes("RGB", image.size, image.tobytes()).save(panel / file)  # a fresh image: no metadata
        rows.append({"file": file, "method": source.method, "class": source.cls,
                     "class_name": names[source.cls], "source": str(source.path)})
    _write_csv(key / KEY_FILE, rows, ["file", "method", "class", "class_name", "source"])
    _write_csv(key / TEMPLATE_FILE, [{"file": r["file"], "guess": "", "photo_score": ""} for r in rows], ANSWER_COLUMNS)
    meta = {"created": datetime.datetime.now().isoformat(timespec="seconds"), "seed": seed, "side": side,
            "images": len(rows), "panel": str(panel.resolve()), "source": str(images.resolve()),
            "methods": sorted({r["method"] for r in rows}), "classes": sorted({r["class"] for r in rows}),
            "one_per_class": None if part is None else {"part": part, "part_seed": part_seed}}
    (key / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return rows


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def instructions(count: int | None = None, first: str = "img_001.png", last: str | None = None) -> str:
    return INSTRUCTIONS.format(count=count if count is not None else "N", first=first,
                               last=last or (f"img_{count:03d}.png" if count else "the last one"))


# ---- matching a guess to a class ---------------------------------------------------------------


def tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _same_word(guess: str, word: str) -> bool:
    """Equal, or `guess` a plural of `word` (s, es, y -> ies)."""
    return guess in (word, word + "s", word + "es") or (word.endswith("y") and guess == word[:-1] + "ies")


def phrase_in(guess: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `guess` as whole words (plural last word allowed), or run together
    ("sail boat" for "sailboat", "sailboat" for "sail boat")."""
    g, p = tokens(guess), tokens(phrase)
    if not p or not g:
        return False
    n = len(p)
    for i in range(len(g) - n + 1):
        window = g[i : i + n]
        if window[:-1] == p[:-1] and _same_word(window[-1], p[-1]):
            return True
    joined = "".join(p)
    for length in range(1, 4):
        for i in range(len(g) - length + 1):
            if _same_word("".join(g[i : i + length]), joined):
                return True
    return False


def class_synonyms(name: str) -> list[str]:
    """'tabby, tabby cat' -> ['tabby', 'tabby cat']."""
    return [s.strip() for s in name.split(",") if s.strip()]


def read_rulings(path: Path | None) -> dict[int, list[str]]:
    """`CLASS[ anything]: word, word` per line; '#' comments; the same class may appear on several lines."""
    rulings: dict[int, list[str]] = {}
    if path is None:
        return rulings
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^(\d+)\b[^:]*:(.*)$", line)
        if not match:
            raise SystemExit(f"{path}:{number}: '{line}' is not 'CLASS: word, word' (e.g. '992: mushroom, toadstool').")
        words = [w.strip() for w in match.group(2).split(",") if w.strip()]
        rulings.setdefault(int(match.group(1)), []).extend(words)
    return rulings


def judge_guess(guess: str, class_name: str, accepted: Sequence[str] = ()) -> tuple[str, str] | None:
    """('name', synonym) when the guess names the class, ('ruling', word) when a ruling accepts it, else None."""
    for synonym in class_synonyms(class_name):
        if phrase_in(guess, synonym):
            return "name", synonym
    for word in accepted:
        if phrase_in(guess, word):
            return "ruling", word
    return None


# ---- scoring -----------------------------------------------------------------------------------


@dataclass
class Answer:
    guess: str
    score: int | None


def read_key(key: Path) -> dict[str, dict]:
    path = key / KEY_FILE if key.is_dir() else key
    if not path.exists():
        raise SystemExit(f"--key {key}: no {KEY_FILE} there (written by `panel prepare`).")
    with path.open(newline="") as f:
        return {row["file"]: dict(row, **{"class": int(row["class"])}) for row in csv.DictReader(f)}


def read_answers(path: Path, files: set[str]) -> dict[str, Answer]:
    with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.DictReader(f)
        header = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        missing = [c for c in ANSWER_COLUMNS if c not in header]
        if missing:
            raise SystemExit(f"{path}: the header must be {','.join(ANSWER_COLUMNS)}; missing {missing}.")
        answers: dict[str, Answer] = {}
        for line, row in enumerate(reader, start=2):
            file = (row[header["file"]] or "").strip()
            if not file:
                continue
            if file not in files:
                raise SystemExit(f"{path}:{line}: '{file}' is not an image of this panel.")
            if file in answers:
                raise SystemExit(f"{path}:{line}: '{file}' is answered twice.")
            text = (row[header["photo_score"]] or "").strip()
            if text and (not text.isdigit() or not 1 <= int(text) <= 5):
                raise SystemExit(f"{path}:{line}: photo_score '{text}' must be a whole number from 1 to 5 (or empty).")
            answers[file] = Answer((row[header["guess"]] or "").strip(), int(text) if text else None)
    return answers


@dataclass
class ViewerResult:
    named: dict[str, int] = field(default_factory=dict)  # method -> images named correctly
    shown: dict[str, int] = field(default_factory=dict)  # method -> images of the method in the panel
    scores: dict[str, list[int]] = field(default_factory=dict)  # method -> photo scores given
    unanswered: dict[str, int] = field(default_factory=dict)  # method -> images with no guess


@dataclass(frozen=True)
class JudgedGuess:
    viewer: str
    file: str
    method: str
    cls: int
    answer: Answer | None  # None: the viewer left the image out
    verdict: tuple[str, str] | None  # judge_guess's; None when not named (or no guess)

    @property
    def unanswered(self) -> bool:
        return _unanswered(self.answer)


def _unanswered(answer: Answer | None) -> bool:
    return answer is None or answer.guess.lower() in NO_GUESS


def judge_all(keys: dict[str, dict[str, dict]], viewers: dict[str, dict[str, Answer]],
              rulings: dict[int, list[str]]) -> list[JudgedGuess]:
    """Every image of every viewer's key, with that viewer's answer and its verdict: the one place
    a guess is judged (score and benchmarks.panel_pool count from it)."""
    from cag_core.class_names import imagenet_class_names

    names = imagenet_class_names()
    judged = []
    for viewer, answers in viewers.items():
        for file, entry in keys[viewer].items():
            cls, answer = entry["class"], answers.get(file)
            verdict = None if _unanswered(answer) else judge_guess(answer.guess, names[cls], rulings.get(cls, ()))
            judged.append(JudgedGuess(viewer, file, entry["method"], cls, answer, verdict))
    return judged


def score(key: dict[str, dict] | dict[str, dict[str, dict]], viewers: dict[str, dict[str, Answer]],
          rulings: dict[int, list[str]], *, key_per_viewer: bool = False) -> dict:
    """key: the panel's key (file -> method, class), the same for every viewer; with key_per_viewer,
    viewer -> that viewer's own key (panels prepared separately, e.g. the parts of --one-per-class)."""
    from cag_core.class_names import imagenet_class_names

    names = imagenet_class_names()
    keys = key if key_per_viewer else {viewer: key for viewer in viewers}
    results: dict[str, ViewerResult] = {viewer: ViewerResult() for viewer in viewers}
    by_ruling, unmatched = [], []
    for guess in judge_all(keys, viewers, rulings):
        result, method = results[guess.viewer], guess.method
        result.shown[method] = result.shown.get(method, 0) + 1
        result.named.setdefault(method, 0)
        result.scores.setdefault(method, [])
        if guess.answer is not None and guess.answer.score is not None:
            result.scores[method].append(guess.answer.score)
        if guess.unanswered:
            result.unanswered[method] = result.unanswered.get(method, 0) + 1
            continue
        row = {"viewer": guess.viewer, "file": guess.file, "method": method, "class": guess.cls,
               "class_name": names[guess.cls], "guess": guess.answer.guess}
        if guess.verdict is None:
            unmatched.append(row)
            continue
        result.named[method] += 1
        if guess.verdict[0] == "ruling":
            by_ruling.append(dict(row, accepted_word=guess.verdict[1]))
    methods = sorted({e["method"] for k in keys.values() for e in k.values()})
    table = {
        method: {
            viewer: {
                "named": r.named[method], "of": r.shown[method], "unanswered": r.unanswered.get(method, 0),
                "photo_score": round(statistics.mean(r.scores[method]), 2) if r.scores[method] else None,
                "photo_scored": len(r.scores[method]),
            }
            for viewer, r in results.items()
        }
        for method in methods
    }
    key_sort = lambda row: (row["class"], row["viewer"], row["file"])  # noqa: E731
    return {"methods": table, "accepted_by_ruling": sorted(by_ruling, key=key_sort),
            "unmatched": sorted(unmatched, key=key_sort), "viewers": list(viewers)}


def brisque_medians(peers_json: Path) -> dict[str, float]:
    runs = json.loads(peers_json.read_text()).get("runs", {})
    return {name: round(statistics.median(r["brisque"] for r in run["records"]), 1)
            for name, run in runs.items() if run.get("records")}


def report_markdown(report: dict, brisque: dict[str, float] | None = None) -> str:
    viewers = report["viewers"]
    head = "| method | " + " | ".join(f"{v} named | {v} photo" for v in viewers)
    head += " | BRISQUE median |" if brisque is not None else " |"
    lines = ["# Blind panel", "", f"Viewers: {', '.join(viewers)}. Named: images whose guess names the class "
             "(an ImageNet name of it, or a word a ruling accepts), of the method's images in the panel. Photo: the "
             "mean photo score, 1 = abstract texture, 3 = recognizable but strange, 5 = a photo.", "", head,
             "|---|" + "---|---|" * len(viewers) + ("---|" if brisque is not None else "")]
    for method, cells in report["methods"].items():
        row = f"| {method} | "
        row += " | ".join(
            (f"{c['named']}/{c['of']}" if c["of"] else "-") + (f" ({c['unanswered']} no guess)" if c["unanswered"] else "")
            + f" | {c['photo_score'] if c['photo_score'] is not None else '-'}" for c in (cells[v] for v in viewers))
        if brisque is not None:
            row += f" | {brisque.get(method, '-')}"
        lines.append(row + " |")
    lines += ["", f"## Accepted by ruling ({len(report['accepted_by_ruling'])})", ""]
    lines += [f"- {r['viewer']}, {r['file']} ({r['method']}, {r['class']} {r['class_name']}): \"{r['guess']}\" "
              f"(ruling: {r['accepted_word']})" for r in report["accepted_by_ruling"]] or ["none"]
    lines += ["", f"## Unmatched guesses, for a ruling ({len(report['unmatched'])})", "",
              "Counted as not named. To accept one, add a line `CLASS: word` to the rulings file and score again.", ""]
    lines += [f"- {r['class']} {r['class_name']}: \"{r['guess']}\" ({r['viewer']}, {r['file']}, {r['method']})"
              for r in report["unmatched"]] or ["none"]
    return "\n".join(lines) + "\n"


def write_report(text: str, data: dict, out: Path | None) -> None:
    """Print the Markdown report; with `out`, write it there and the data as JSON beside it."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")


# ---- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="shuffle every method's images into one neutral folder; write the key apart")
    p.add_argument("--images", type=Path, default=Path("benchmarks/results/peers/images"))
    p.add_argument("--panel", type=Path, required=True, help="new or empty folder: the viewers see only this")
    p.add_argument("--key", type=Path, required=True, help="folder for the key and the answers template (not in --panel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--side", type=int, default=512, help="common longer side of the panel images (0 = keep)")
    p.add_argument("--methods", default=None, help="comma list of method folders (default: all)")
    p.add_argument("--one-per-class", type=int, default=None, metavar="PART",
                   help="each class once, in one method: part PART (0..M-1) of a Latin square over the M methods "
                        "(the parts together hold every image once; see one_per_class)")
    p.add_argument("--part-seed", type=int, default=0, help="with --one-per-class: the seed of the class order "
                   "(the same for every part of one square)")
    p = sub.add_parser("instructions", help="print the brief for a viewer")
    p.add_argument("--panel", type=Path, default=None, help="the panel folder (to name its files and count)")
    p = sub.add_parser("score", help="score viewers' answers against the key")
    p.add_argument("--key", type=Path, nargs="+", required=True,
                   help="the key folder, or one per --answers file in the same order (viewers of separate panels)")
    p.add_argument("--answers", type=Path, nargs="+", required=True, help="one CSV per viewer (viewer = file stem)")
    p.add_argument("--rulings", type=Path, default=None)
    p.add_argument("--peers", type=Path, default=None, help="benchmarks/peers.py results.json: adds BRISQUE medians")
    p.add_argument("--out", type=Path, default=None, help="write the report here (.md; a .json beside it)")
    args = parser.parse_args(argv)

    if args.command == "prepare":
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        rows = prepare(args.images, args.panel, args.key, seed=args.seed, side=args.side, methods=methods,
                       part=args.one_per_class, part_seed=args.part_seed)
        print(f"{len(rows)} images in {args.panel}; key, answers template and {META_FILE} in {args.key}.")
        print(f"Give the viewers the folder {args.panel} (and {args.key / TEMPLATE_FILE} if you like) and the text of "
              f"`python -m benchmarks.panel instructions --panel {args.panel}`.")
    elif args.command == "instructions":
        files = sorted(args.panel.glob("img_*.png")) if args.panel else []
        print(instructions(len(files), files[0].name, files[-1].name) if files else instructions())
    else:
        if len(args.key) not in (1, len(args.answers)):
            raise SystemExit(f"--key: give one key folder, or one per --answers file ({len(args.answers)}); "
                             f"got {len(args.key)}.")
        keys = [read_key(k) for k in args.key] * (len(args.answers) if len(args.key) == 1 else 1)
        viewers, viewer_keys = {}, {}
        for path, key in zip(args.answers, keys):
            if path.stem in viewers:
                raise SystemExit(f"Two answer files for viewer '{path.stem}': name each file after its viewer.")
            viewers[path.stem] = read_answers(path, set(key))
            viewer_keys[path.stem] = key
        report = score(viewer_keys, viewers, read_rulings(args.rulings), key_per_viewer=True)
        brisque = brisque_medians(args.peers) if args.peers else None
        if brisque is not None:
            report["brisque_median"] = brisque
        write_report(report_markdown(report, brisque), report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
