"""The frontend extension: its JavaScript parses, and the readout helpers behave (run with node)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import REPO_ROOT

WEB = REPO_ROOT / "web"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed")


@needs_node
@pytest.mark.parametrize("path", sorted(WEB.glob("*.js")), ids=lambda p: p.name)
def test_javascript_parses_as_a_module(path):
    """Each file is valid ES module syntax (as the browser loads it)."""
    result = subprocess.run([NODE, "--check", "--input-type=module"], input=path.read_text(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def run_module(code: str):
    script = f"import * as r from {json.dumps((WEB / 'cag_readout.js').as_uri())};\n{code}"
    result = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_node
def test_readout_history_restarts_with_each_run():
    """Losses accumulate within a run; a step that does not advance starts a new history."""
    out = run_module(
        "let s = r.pushLoss(undefined, {step: 1, total: 3, loss: 2});"
        "s = r.pushLoss(s, {step: 2, total: 3, loss: 1.5});"
        "const a = s; s = r.pushLoss(s, {step: 1, total: 3, loss: 9});"
        "console.log(JSON.stringify([a.losses, s.losses, r.formatReadout(a)]));"
    )
    assert out == [[2, 1.5], [9], "step 2/3 · loss 1.500"]


@needs_node
def test_sparkline_spans_the_box():
    """The first and last points sit at the box edges; the highest loss at the top."""
    out = run_module("console.log(JSON.stringify(r.sparklinePoints([3, 1, 2], 10, 4)));")
    assert out == [[0, 0], [5, 4], [10, 2]]


@needs_node
def test_classify_report_lines_are_cut_and_capped():
    """ui.text (a list of strings) becomes lines; long lines end in '…'; long reports end with a count."""
    out = run_module(
        "const long = Array.from({length: 50}, (_, i) => `line ${i}`).join('\\n');"
        "console.log(JSON.stringify([r.reportLines(['a\\nb', 'c']), r.reportLines(['x'.repeat(10)], 40, 6),"
        "r.reportLines([long], 5).slice(-2), r.reportLines(undefined), r.reportLines([''])]));"
    )
    assert out == [["a", "b", "c"], ["xxxxx…"], ["line 3", "… 46 more lines (see the report output)"], [], []]


@needs_node
def test_classify_node_shows_its_report(tmp_path):
    """The extension, with ComfyUI's app stubbed: after a run the node grows to hold the report
    and draws every line inside its bottom edge; other node types are left alone."""
    source = (WEB / "cag_classify_report.js").read_text()
    stub_import = 'import { app } from "../../scripts/app.js";'
    assert stub_import in source
    (tmp_path / "cag_readout.js").write_text((WEB / "cag_readout.js").read_text())
    (tmp_path / "ext.js").write_text(source.replace(stub_import, "const app = globalThis.app;"))
    script = f"""
    globalThis.app = {{ registerExtension: (e) => {{ globalThis.ext = e; }} }};
    await import({json.dumps((tmp_path / 'ext.js').as_uri())});
    class Node {{
      constructor() {{ this.size = [200, 80]; this.flags = {{}}; }}
      computeSize() {{ return [180, 80]; }}
      setSize(size) {{ this.size = size; }}
    }}
    class Other {{}}
    ext.beforeRegisterNodeDef(Node, {{ name: "CaGClassify" }});
    ext.beforeRegisterNodeDef(Other, {{ name: "SomethingElse" }});
    const node = new Node();
    node.onExecuted({{ text: ["classifier: tiny\\nimage 1:\\n  0.500  1: a"] }});
    const drawn = [];
    const ctx = {{ save() {{}}, restore() {{}}, beginPath() {{}}, rect() {{}}, fill() {{}},
                  fillText: (text, x, y) => drawn.push([text, y]) }};
    node.onDrawForeground(ctx);
    console.log(JSON.stringify({{ size: node.size, drawn, other: Object.keys(Other.prototype) }}));
    """
    result = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [text for text, _ in out["drawn"]] == ["classifier: tiny", "image 1:", "  0.500  1: a"]
    assert out["size"][1] > 80 and all(80 <= y < out["size"][1] for _, y in out["drawn"])
    assert out["other"] == []
