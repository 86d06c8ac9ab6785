"""KnockoutGrid: click layers x edge groups to cut attention, watch the answer move."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import anywidget
import traitlets

from flowkit.errors import FlowkitError
from flowkit.views.view_models import (
    AnswerExplorer,
    cells_to_spec,
    describe_cells,
    grid_columns,
    grid_setup,
    grid_view,
    resolve_prompt,
    spec_to_cells,
    window_cells,
)
from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS
from flowkit.intervention.spec import KnockoutSpec
from widgets.snapshot import Snapshot

HERE = Path(__file__).parent


class KnockoutGrid(Snapshot, anywidget.AnyWidget):
    """Rows are the language model's layers, columns edge groups; a cut cell cuts that group in that layer.

    >>> grid = KnockoutGrid(vllm, sample)                                   # doctest: +SKIP
    >>> grid = KnockoutGrid(vllm, sample, edge_groups="frames")             # one column per frame
    >>> KnockoutSpec.from_json(grid.spec_json)                              # the current spec

    In the notebook: click a cell to toggle it, drag to paint several, shift-click to
    cut the paper's window (``window_size`` layers centred on the clicked layer; again
    to clear it), "Clear" to start over. The bars show p(option) before (grey) and
    after (blue) the knockout, ★ marks the correct option, and the line underneath the
    paper's % change of the clean run's predicted option.

    State: ``spec_json`` (canonical :class:`~flowkit.intervention.spec.KnockoutSpec` JSON: one
    ``LayerSet`` cut per edge group, in column order). Set it — or pass ``spec=`` — to
    restore a saved grid; ``KnockoutSpec.from_json(grid.spec_json)`` reads it back.
    The view's own choices are ``scale`` and ``window_size``; ``view`` is what the grid
    draws for the spec (:func:`~flowkit.views.view_models.grid_view`: cut cells, answer, error)
    and ``setup`` what never changes (:func:`~flowkit.views.view_models.grid_setup`: layers,
    columns, thumbnails, question, sample id).

    Args:
        vllm: a :class:`flowkit.VideoLLM`.
        prompt: a :class:`flowkit.data.Sample` or a prepared prompt (``vllm.prepare(...)``).
        edge_groups: the columns: edge groups (``"video->question"``, ``"cross_frame"``, ...),
            ``"frame:i"`` (frame i's inputs from earlier frames) or ``"frames"`` (every
            frame's); see :mod:`flowkit.views.view_models`.
        spec: a spec to start from (default: nothing cut).
        session: a :class:`~flowkit.intervention.session.Session` of this prompt to share (its clean run is reused).
        frames: the video frames, for thumbnails over frame columns when ``prompt`` is prepared.
        options: option texts shown beside the letters when ``prompt`` is prepared.
        window_size: layers cut by shift-click (the paper's 9).
    """

    _esm = HERE / "knockout_grid.js"
    _css = HERE / "knockout_grid.css"

    # what changes: the spec, the view's two choices, and what the grid draws for the spec
    spec_json = traitlets.Unicode(KnockoutSpec().to_json()).tag(sync=True)
    scale = traitlets.Enum(["options", "vocab"], default_value="options").tag(sync=True)
    window_size = traitlets.Int(9).tag(sync=True)
    view = traitlets.Dict().tag(sync=True)
    # what does not: sent once
    setup = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        vllm,
        prompt,
        edge_groups: str | Sequence[str] = PAPER_EDGE_GROUPS,
        *,
        spec: KnockoutSpec | None = None,
        session=None,
        frames=None,
        options: Sequence[str] | None = None,
        window_size: int = 9,
        **kwargs,
    ):
        prepared, frames, options, question = resolve_prompt(vllm, prompt, frames, options)
        self._explorer = AnswerExplorer(vllm, prepared, session=session)
        self._grid_columns = grid_columns(edge_groups, prepared.spans)
        self._options = options
        self._num_layers = vllm.num_layers
        super().__init__(
            setup=grid_setup(
                self._grid_columns, vllm.num_layers, prepared.spans, frames, question, str(getattr(prompt, "id", ""))
            ),
            window_size=window_size,
            **kwargs,
        )
        self.on_msg(self._on_frontend_msg)
        self.spec = spec if spec is not None else KnockoutSpec()
        self._refresh()  # also when ``spec`` equals the default and no change was observed

    # ------------------------------------------------------------------ state
    @property
    def spec(self) -> KnockoutSpec:
        """The current knockout spec."""
        return KnockoutSpec.from_json(self.spec_json)

    @spec.setter
    def spec(self, spec: KnockoutSpec) -> None:
        self.spec_json = spec.to_json()

    @property
    def cells(self) -> list[tuple[int, int]]:
        """The cut cells, ``(layer, column index)``."""
        return [tuple(c) for c in self.view.get("cells", [])]

    @property
    def answer(self) -> dict:
        """What the bars show: :func:`~flowkit.views.view_models.answer_view` of the current spec."""
        return self.view.get("answer", {})

    @property
    def error(self) -> str:
        """Why the last action was refused ('' when it was not)."""
        return self.view.get("error", "")

    @property
    def num_layers(self) -> int:
        """The grid's rows: the language model's layers."""
        return self._num_layers

    @property
    def columns(self) -> list[dict]:
        """The grid's columns (:meth:`~flowkit.views.view_models.GridColumn.to_dict`)."""
        return self.setup["columns"]

    @property
    def question(self) -> str:
        """The question shown over the grid ('' for a prepared prompt)."""
        return self.setup["question"]

    @property
    def sample_id(self) -> str:
        """The id of the sample this grid shows ('' for a prepared prompt)."""
        return self.setup["sample_id"]

    @property
    def explorer(self) -> AnswerExplorer:
        """The :class:`~flowkit.views.view_models.AnswerExplorer` that computes the answers."""
        return self._explorer

    @traitlets.validate("spec_json")
    def _canonical_spec(self, proposal):
        try:
            spec = KnockoutSpec.from_json(proposal["value"])
            cells = spec_to_cells(spec, self._grid_columns, self.num_layers)
            canonical = cells_to_spec(cells, self._grid_columns, self.num_layers)
            self._explorer.answer(canonical)  # refuses specs that leave a token nothing to attend to
        except FlowkitError as exc:
            raise traitlets.TraitError(str(exc)) from None
        return canonical.to_json()

    @traitlets.observe("spec_json")
    def _spec_changed(self, _change):
        self._refresh()

    def _refresh(self) -> None:
        self.view = grid_view(self._explorer, self.spec, self._grid_columns, self.num_layers, self._options)

    def _show_error(self, message: str) -> None:
        self.view = {**self.view, "error": message}

    def snapshot_chart(self):
        """What the grid shows, as a chart: the answer before and after the current cut (saved outputs)."""
        from flowkit.views.plots import answer_bars

        spec = self.spec
        cut = describe_cells(self.cells, self._grid_columns) if self.cells else "nothing cut"
        chart = answer_bars(self._explorer.clean, self._explorer.answer(spec), options=self._options)
        return chart.properties(
            title={
                "text": f"KnockoutGrid: {self.question or 'the prompt'}",
                "subtitle": [f"cut: {cut}", "a static picture: run the notebook to click"],
            }
        )

    # ---------------------------------------------------------------- actions
    def set_cells(self, cells, cut: bool = True) -> None:
        """Cut (or restore) the given ``(layer, column)`` cells."""
        current = set(self.cells)
        chosen = {(int(layer), int(column)) for layer, column in cells}
        self._apply(current | chosen if cut else current - chosen)

    def toggle(self, layer: int, column: int) -> None:
        """Toggle one cell."""
        self.set_cells([(layer, column)], cut=(layer, column) not in set(self.cells))

    def cut_window(self, center: int, column: int, size: int | None = None) -> None:
        """Cut the paper's window (``size`` layers, default ``window_size``) centred on ``center`` in one column.

        If every cell of that window is already cut, the window is restored instead.
        """
        window = window_cells(center, column, self.num_layers, size or self.window_size)
        self.set_cells(window, cut=not set(window) <= set(self.cells))

    def clear(self) -> None:
        """Restore every edge (the clean run)."""
        self._apply(set())

    def _apply(self, cells) -> None:
        try:
            self.spec_json = cells_to_spec(sorted(cells), self._grid_columns, self.num_layers).to_json()
            self._show_error("")
        except (traitlets.TraitError, FlowkitError) as exc:
            self._show_error(str(exc))

    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        """Actions sent by the view: ``paint`` (cells, cut), ``window`` (layer, column), ``clear``.

        Every action is acknowledged with ``{"event": "done"}`` so the view can end its
        "computing…" state even when the action changed nothing.
        """
        action = content.get("action") if isinstance(content, dict) else None
        try:
            if action == "paint":
                self.set_cells(content["cells"], cut=bool(content["cut"]))
            elif action == "window":
                self.cut_window(int(content["layer"]), int(content["column"]))
            elif action == "clear":
                self.clear()
            else:
                self._show_error(f"unknown action from the view: {content!r}")
        except (KeyError, TypeError, ValueError, FlowkitError) as exc:
            self._show_error(f"{type(exc).__name__}: {exc}")
        finally:
            self.send({"event": "done"})
