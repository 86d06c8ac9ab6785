"""KnockoutGrid: click layers x edge groups to cut attention, watch the answer move."""

from __future__ import annotations

from typing import Sequence

import anywidget
import traitlets

from flowkit.errors import FlowkitError
from flowkit.thumbnails import frame_thumbnails
from flowkit.view_models import (AnswerExplorer, answer_view, cells_to_spec, describe_cells, grid_columns, resolve_prompt, spec_to_cells, window_cells)
from flowkit.edge_groups import PAPER_EDGE_GROUPS
from flowkit.spec import KnockoutSpec
from widgets.assets import view_source
from widgets.snapshot import Snapshot


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

    State: ``spec_json`` (canonical :class:`~flowkit.spec.KnockoutSpec` JSON: one
    ``LayerSet`` cut per edge group, in column order). Set it — or pass ``spec=`` — to
    restore a saved grid; ``KnockoutSpec.from_json(grid.spec_json)`` reads it back.

    Args:
        vllm: a :class:`flowkit.VideoLLM`.
        prompt: a :class:`flowkit.data.Sample` or a prepared prompt (``vllm.prepare(...)``).
        edge_groups: the columns: edge groups (``"video->question"``, ``"cross_frame"``, ...),
            ``"frame:i"`` (frame i's inputs from earlier frames) or ``"frames"`` (every
            frame's); see :mod:`flowkit.view_models`.
        spec: a spec to start from (default: nothing cut).
        session: a :class:`~flowkit.session.Session` of this prompt to share (its clean run is reused).
        frames: the video frames, for thumbnails over frame columns when ``prompt`` is prepared.
        options: option texts shown beside the letters when ``prompt`` is prepared.
        window_size: layers cut by shift-click (the paper's 9).
    """

    _esm, _css = view_source("knockout_grid")

    spec_json = traitlets.Unicode(KnockoutSpec().to_json()).tag(sync=True)
    num_layers = traitlets.Int(0).tag(sync=True)
    columns = traitlets.List(traitlets.Dict()).tag(sync=True)
    cut_cells = traitlets.List(traitlets.List(traitlets.Int())).tag(sync=True)
    answer = traitlets.Dict().tag(sync=True)
    scale = traitlets.Enum(["options", "vocab"], default_value="options").tag(sync=True)
    window_size = traitlets.Int(9).tag(sync=True)
    thumbnails = traitlets.List(traitlets.Unicode()).tag(sync=True)
    question = traitlets.Unicode("").tag(sync=True)
    sample_id = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, vllm, prompt, edge_groups: str | Sequence[str] = PAPER_EDGE_GROUPS, *,
                 spec: KnockoutSpec | None = None, session=None, frames=None, options: Sequence[str] | None = None,
                 window_size: int = 9, **kwargs):
        prepared, frames, options, question = resolve_prompt(vllm, prompt, frames, options)
        self._explorer = AnswerExplorer(vllm, prepared, session=session)
        self._grid_columns = grid_columns(edge_groups, prepared.spans)
        self._options = options
        thumbs = []
        if frames is not None and any(c.frame is not None for c in self._grid_columns):
            per_span = prepared.spans.frames_per_span
            thumbs = frame_thumbnails(frames[::per_span][: prepared.spans.num_frames], size=64)
        super().__init__(num_layers=vllm.num_layers, columns=[c.to_dict() for c in self._grid_columns],
                         window_size=window_size, thumbnails=thumbs, question=question,
                         sample_id=str(getattr(prompt, "id", "")), **kwargs)
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
        return [tuple(c) for c in self.cut_cells]

    @property
    def explorer(self) -> AnswerExplorer:
        """The :class:`~flowkit.view_models.AnswerExplorer` that computes the answers."""
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
        spec = self.spec
        cells = spec_to_cells(spec, self._grid_columns, self.num_layers)
        self.cut_cells = [list(c) for c in cells]
        self.answer = answer_view(self._explorer.clean, self._explorer.answer(spec), spec, self._options,
                                  spec_text=describe_cells(cells, self._grid_columns))
        self.error = ""

    def snapshot_chart(self):
        """What the grid shows, as a chart: the answer before and after the current cut (saved outputs)."""
        from flowkit.plots import answer_bars

        spec = self.spec
        cut = describe_cells(self.cells, self._grid_columns) if self.cells else "nothing cut"
        chart = answer_bars(self._explorer.clean, self._explorer.answer(spec), options=self._options)
        return chart.properties(title={"text": f"KnockoutGrid: {self.question or 'the prompt'}",
                                       "subtitle": [f"cut: {cut}", "a static picture: run the notebook to click"]})

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
            self.error = ""
        except (traitlets.TraitError, FlowkitError) as exc:
            self.error = str(exc)

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
                self.error = f"unknown action from the view: {content!r}"
        except (KeyError, TypeError, ValueError, FlowkitError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.send({"event": "done"})
