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
