"""The import contract: the library, the course and the kit's model are three parts.

- the library (``flowkit`` minus the subpackages below) imports neither the course
  (``flowkit.course``), the kit's own model (``flowkit.smol_video``) nor the testing support
  (``flowkit.testing``);
- ``import flowkit`` loads none of them;
- no module imports another in a cycle;
- exactly one library module touches transformers' attention registration.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowkit"
APART = ("flowkit.course", "flowkit.smol_video", "flowkit.testing")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every flowkit module ``path`` imports, at top level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m == "flowkit" or m.startswith("flowkit.")}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _part(module: str) -> str:
    return next((part for part in APART if module == part or module.startswith(part + ".")), "library")


def test_library_imports_neither_the_course_nor_the_kits_model():
    modules = _modules()
    offending = []
    for name, path in modules.items():
        if _part(name) != "library":
            continue
        for imported in _imports(path):
            if _part(imported) != "library":
                offending.append(f"{name} imports {imported}")
    assert not offending, "the library must not import the course, the kit's model or testing code:\n" + "\n".join(
        offending
    )


def test_import_flowkit_loads_only_the_library():
    code = "import sys, flowkit; print('\\n'.join(m for m in sys.modules if m.startswith('flowkit')))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert "flowkit.spec" in loaded and "flowkit.models" in loaded
    apart = [m for m in loaded if _part(m) != "library"]
    assert not apart, f"import flowkit loaded {apart}"


def test_no_import_cycles():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for imported in _imports(path):
            # `from flowkit.x import y` names module flowkit.x.y only when that module exists
            if imported in modules and imported != name:
                edges.add(imported)
        # a package's __init__ is imported with every module inside it, not the other way round
        graph[name] = {e for e in edges if not name.startswith(e + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_one_module_touches_attention_registration():
    touching = sorted(
        name
        for name, path in _modules().items()
        if "AttentionInterface" in path.read_text() and _part(name) == "library"
    )
    assert touching == ["flowkit.attention"], touching


def test_the_kits_model_is_known_by_name_through_its_entry_point():
    """The library finds the kit's model without importing it: the installed kit's entry point registers it."""
    import pytest

    from flowkit import named_models
    from flowkit.errors import ModelLoadError

    assert {"flowkit-smol-video", "flowkit-smol-video-control"} <= set(named_models.available())
    with pytest.raises(ModelLoadError, match="no model called 'flowkit-smol-vidoe' is registered.*setup.sh"):
        named_models.resolve("flowkit-smol-vidoe")
    assert named_models.resolve("llava-hf/LLaVA-NeXT-Video-7B-hf") is None  # not a kit name: left to the hub


def test_data_location_is_the_checkout_or_the_environment_variable(monkeypatch, tmp_path):
    import pytest

    from flowkit.locations import DATA_ENV, DataNotFoundError, data_dir

    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_dir() == ROOT / "data"
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        data_dir()
