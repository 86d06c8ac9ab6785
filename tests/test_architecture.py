"""The import contract: the library, the course and the kit's model are three parts.

- the library (``flowkit`` minus the subpackages below) imports neither the course
  (``flowkit.course``), the kit's own model (``flowkit.smol_video``) nor the testing support
  (``flowkit.testing``);
- ``import flowkit`` loads none of them;
- no module imports another in a cycle;
- exactly one library module touches transformers' attention registration;
- the library's layers (:data:`LAYERS`, the README's "How the code is laid out") are imported only
  downwards: a module imports modules of its own layer or of a lower one, never of a higher one.
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


#: The library's layers, lowest first; the data flows upwards. The foundation modules (layer 0) may be
#: imported from anywhere; the course, the kit's model and testing code sit above every layer.
LAYERS = (
    (
        "foundation",
        ("flowkit.errors", "flowkit.locations", "flowkit.atomic_files", "flowkit.formatting", "flowkit.palette"),
    ),
    ("data", ("flowkit.data",)),
    ("prompts", ("flowkit.prompts",)),
    ("families", ("flowkit.families",)),
    ("intervention", ("flowkit.intervention",)),
    ("model", ("flowkit.model", "flowkit.convert")),
    ("analysis", ("flowkit.analysis",)),
    ("views", ("flowkit.views",)),
    ("front doors", ("flowkit.knockout_check", "flowkit.cli", "flowkit.__main__", "flowkit")),
    ("course, kit's model, testing", APART),
)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the layer ``module`` belongs to (the longest matching prefix)."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import in ``graph`` (module -> modules it imports) from a lower layer to a higher one."""
    found = []
    for module, imported in sorted(graph.items()):
        here = layer_of(module)
        for target in sorted(imported):
            there = layer_of(target)
            if here is not None and there is not None and there > here and there != 0:
                found.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    return found


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
    assert "flowkit.intervention.spec" in loaded and "flowkit.model.videollm" in loaded
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
    assert touching == ["flowkit.intervention.attention"], touching


def test_the_kits_model_is_known_by_name_through_its_entry_point():
    """The library finds the kit's model without importing it: the installed kit's entry point registers it."""
    import pytest

    from flowkit.model import named_models
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


def test_every_library_module_has_a_layer():
    homeless = [name for name in _modules() if layer_of(name) is None]
    assert not homeless, f"add these modules to a layer of LAYERS (and the README's layer table): {homeless}"


def test_imports_only_go_down_the_layers():
    graph = {name: _imports(path) for name, path in _modules().items()}
    graph = {name: {t for t in targets if t != "flowkit"} for name, targets in graph.items()}  # the facade
    upward = upward_imports(graph)
    assert not upward, "imports against the layer order (README, 'How the code is laid out'):\n" + "\n".join(upward)


def test_an_upward_import_is_caught():
    """The rule itself: a mask module reaching up into the plots, or the data layer into a session."""
    assert upward_imports({"flowkit.intervention.masks": {"flowkit.views.plots", "flowkit.prompts.spans"}}) == [
        "flowkit.intervention.masks (intervention) imports flowkit.views.plots (views)"
    ]
    assert upward_imports({"flowkit.data.video": {"flowkit.intervention.session", "flowkit.errors"}}) == [
        "flowkit.data.video (data) imports flowkit.intervention.session (intervention)"
    ]
    assert upward_imports({"flowkit.course.chapters": {"flowkit.views.plots"}}) == []
