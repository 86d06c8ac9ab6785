"""The checked cells of a chapter, with only the statements they need.

nbval compares the saved output of every cell marked ``# NBVAL_CHECK_OUTPUT``. To rerun just
those cells under another CPU's arithmetic (``ATEN_CPU_CAPABILITY=default``, another
``MKL_CBWR`` code path) without paying for the whole chapter, :func:`slice_notebook` keeps:

- every checked cell whole, with its saved outputs;
- the chapter's first code cell (imports and ``chapters.start()``: seeds, display options);
- every earlier top-level statement that binds a name a kept statement reads — the nearest
  binding, plus the statements after it that change the name in place (``x[k] = ...``,
  ``x.attr = ...``, ``x += ...``, ``x.append(...)`` on a name that is not a module), followed
  back transitively.

Everything else (charts, widgets, exercises, prose) is left out. The slice is a plain
notebook; :func:`slice_chapters` joins the slices of several chapters into one (one kernel,
one model load). Run it with nbval like a chapter (``tests/test_cross_kernel.py``).
"""

from __future__ import annotations

import ast
import builtins
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
_BUILTINS = frozenset(dir(builtins))


@dataclass
class _Statement:
    cell: int
    source: str
    binds: set[str] = field(default_factory=set)
    mutates: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)
    imports: bool = False


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _targets(target: ast.AST, binds: set[str], mutates: set[str]) -> None:
    if isinstance(target, ast.Name):
        binds.add(target.id)
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            _targets(element, binds, mutates)
    elif isinstance(target, ast.Starred):
        _targets(target.value, binds, mutates)
    elif (root := _root_name(target)) is not None:
        mutates.add(root)


def _analyse(node: ast.stmt, source: str, cell: int) -> _Statement:
    statement = _Statement(cell=cell, source=source)
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        statement.imports = True
        for alias in node.names:
            statement.binds.add((alias.asname or alias.name).split(".")[0])
        return statement
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        statement.binds.add(node.name)
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for target in sub.targets if isinstance(sub, ast.Assign) else [sub.target]:
                _targets(target, statement.binds, statement.mutates)
            if isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name):
                statement.reads.add(sub.target.id)
        elif isinstance(sub, (ast.For, ast.AsyncFor, ast.comprehension)):
            _targets(sub.target, statement.binds, statement.mutates)
        elif isinstance(sub, ast.withitem) and sub.optional_vars is not None:
            _targets(sub.optional_vars, statement.binds, statement.mutates)
        elif (
            isinstance(sub, ast.Expr)
            and isinstance(sub.value, ast.Call)
            and isinstance(sub.value.func, ast.Attribute)
            and (root := _root_name(sub.value.func)) is not None
        ):
            statement.mutates.add(root)  # rows.append(...): a method call on its own may change the object
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            statement.reads.add(sub.id)
    statement.reads -= _BUILTINS
    return statement


def _statements(source: str, cell: int) -> list[_Statement]:
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    out = []
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        out.append(_analyse(node, "".join(lines[start - 1 : node.end_lineno]), cell))
    return out


def checked_cells(notebook: dict) -> list[int]:
    """Indices of the cells nbval compares (marked ``# NBVAL_CHECK_OUTPUT``)."""
    return [
        i
        for i, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and CHECK_MARKER in "".join(cell["source"])
    ]


def slice_notebook(notebook: dict) -> dict:
    """A copy of ``notebook`` holding its checked cells and only the statements they need (module docstring)."""
    code = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"]
    targets = set(checked_cells(notebook))
    if not targets:
        return {**notebook, "cells": []}
    statements: list[_Statement] = []
    for i in code:
        statements.extend(_statements("".join(notebook["cells"][i]["source"]), i))
    modules = set().union(*(s.binds for s in statements if s.imports))
    for s in statements:  # chapters.show_clip(...) does not change the module chapters
        s.mutates -= modules
    keep = {k for k, s in enumerate(statements) if s.cell in targets or s.cell == code[0]}
    todo = sorted(keep)
    while todo:
        k = todo.pop()
        for name in statements[k].reads:
            for j in range(k - 1, -1, -1):
                earlier = statements[j]
                if name in earlier.mutates or name in earlier.binds:
                    if j not in keep:
                        keep.add(j)
                        todo.append(j)
                    if name in earlier.binds and name not in earlier.mutates:
                        break
    cells = []
    for i in code:
        if i in targets:
            cells.append(copy.deepcopy(notebook["cells"][i]))
            continue
        kept = [s.source for k, s in enumerate(statements) if k in keep and s.cell == i]
        if kept:
            cells.append(
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"slice-{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": "".join(s if s.endswith("\n") else s + "\n" for s in kept),
                }
            )
    return {**notebook, "cells": cells}


def slice_chapters(chapters: list[str | Path], extra_cells: list[str] = ()) -> dict:
    """One notebook: the slices of ``chapters`` one after another (one kernel, the model loaded once),
    then ``extra_cells`` (code, not compared). Each chapter's slice starts with its own setup cell, so
    it rebinds every name it reads before reading it."""
    notebooks = [json.loads(Path(c).read_text(encoding="utf-8")) for c in chapters]
    cells = []
    for path, notebook in zip(chapters, notebooks):
        for k, cell in enumerate(slice_notebook(notebook)["cells"]):
            cells.append({**cell, "id": f"{Path(path).stem[:2]}-{k}"})
    for k, source in enumerate(extra_cells):
        cells.append(
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"extra-{k}",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
        )
    return {
        "cells": cells,
        "metadata": notebooks[0]["metadata"] if notebooks else {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


__all__ = ["CHECK_MARKER", "checked_cells", "slice_chapters", "slice_notebook"]
