"""The import rules of README's "How the code is laid out" that import-linter's contracts (pyproject.toml, run by
bin/lint) do not state: the API process imports no torch (an API container needs none), and in kb/render only the
lucent adapter imports lucent."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

KB = Path(__file__).resolve().parent.parent / "kb"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_lucent_adapter_imports_lucent_in_render():
    """Rendering goes through kb/render/lucent_adapter.py, which fixes lucent's notebook behaviour."""
    importers = sorted(p.name for p in (KB / "render").rglob("*.py") if "lucent" in _imports(p))
    assert importers == ["lucent_adapter.py"]


def test_the_api_process_imports_no_torch(engine):
    code = (
        "import sys\n"
        "from kb.settings import Settings\n"
        "from kb.web.app import create_app\n"
        f"create_app(Settings(database_url={engine.url.render_as_string(hide_password=False)!r}), warm=False)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'lucent')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
