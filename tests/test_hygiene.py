"""Registry hygiene and packaging: no eval/exec, no runtime installs, no network at import, no torch pin."""

import ast
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK_SOURCES = [p for d in ("cag_core", "nodes") for p in (ROOT / d).rglob("*.py")] + [ROOT / "__init__.py"]


def test_ruff_security_rules_pass():
    """ruff with the registry's rules (S102 exec, S307 eval) and pyflakes passes on the whole repo."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install ruff)")
    result = subprocess.run([ruff, "check", "--select", "S102,S307,F,E9", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _bare_calls(tree: ast.AST):
    # Bare names only: `model.eval()` and `re.compile()` are fine, builtins eval/exec/compile are not.
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            yield node.func.id


def _imported_modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", PACK_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_eval_exec_or_runtime_installs(path):
    """Pack code calls no eval/exec/compile and cannot shell out (so cannot pip install at run time)."""
    tree = ast.parse(path.read_text())
    assert not set(_bare_calls(tree)) & {"eval", "exec", "compile", "__import__"}
    assert not set(_imported_modules(tree)) & {"subprocess", "pip", "ensurepip"}
    assert "os.system(" not in path.read_text()


def test_importing_the_engine_opens_no_connection():
    """Importing cag_core (and building the embedded classifier's class list) touches no network."""
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n    raise RuntimeError('network access at import')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "import cag_core, cag_core.timm_classifier, cag_core.text_classifier, cag_core.mae\n"
        "from cag_core.class_names import imagenet_class_names\nassert len(imagenet_class_names()) == 1000\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert socket  # imported for the reader: the subprocess patches it


def test_dependencies_never_pin_torch_and_match_requirements():
    """pyproject and requirements.txt list the same runtime deps, and neither names torch."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"])
    listed = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert declared == listed
    for dep in declared | set(sum(project["optional-dependencies"].values(), [])):
        assert not dep.lower().startswith(("torch=", "torch>", "torch<", "torchvision")) and dep.lower() != "torch"


def test_engine_never_imports_comfyui():
    """cag_core stays ComfyUI-free: only nodes/ may import comfy.* or folder_paths."""
    for path in (ROOT / "cag_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("comfy", "folder_paths", "server", "execution") for n in names), path
