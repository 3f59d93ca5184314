"""The package's shape: no import cycles, and a torch-free config and registry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import napari_inif

PACKAGE = Path(napari_inif.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules of this package imported when ``path`` is imported: module-level imports,
    not those inside functions (deliberately lazy) or under ``if TYPE_CHECKING``."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("napari_inif"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("napari_inif"))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at import time."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target in _top_level_imports(path):
            # ``from a.b import c`` imports a.b (and c, if c is a module of a.b)
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "napari_inif.core.codec.plan" in graph  # the graph covers the subpackages
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_core_imports_no_qt_or_napari():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("napari_inif.core"):
            assert not any(t.startswith(("napari_inif._qt", "napari_inif.cli")) for t in targets)
    for path in (PACKAGE / "core").rglob("*.py"):
        text = path.read_text()
        assert "import napari" not in text.replace("import napari_inif", ""), path
        assert "qtpy" not in text, path


def test_config_and_registry_listing_import_no_torch():
    code = (
        "import sys\n"
        "from napari_inif.core.config import CompressionConfig\n"
        "from napari_inif.core.registry import ARCHITECTURES, CODECS, GUIDANCES, OPTIMIZERS\n"
        "CompressionConfig(ratio=128, mode='hybrid', prior=CODECS.names()[0])\n"
        "names = [r.names() for r in (ARCHITECTURES, CODECS, GUIDANCES, OPTIMIZERS)]\n"
        "assert all(names), names\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
