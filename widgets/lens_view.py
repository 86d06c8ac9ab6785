"""LensView: what each frame's video tokens "say" after each layer, through a lens."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import anywidget
import traitlets

from flowkit.errors import FlowkitError
from flowkit.analysis.lens import LENS_KINDS
from flowkit.intervention.spec import KnockoutSpec
from flowkit.views.view_models import applicable_spec, lens_setup, lens_tables, resolve_prompt
from widgets.snapshot import Snapshot

HERE = Path(__file__).parent


class LensView(Snapshot, anywidget.AnyWidget):
    """Per frame, the words its video tokens decode to after a chosen layer.

    >>> LensView(vllm, sample)                                # doctest: +SKIP
    >>> LensView(vllm, sample, kind="logit", layer=20)        # doctest: +SKIP

    The residual stream is computed once (under ``spec_json``, default: no knockout) and
    read through both lenses (:func:`flowkit.analysis.lens.frame_top_words`): the **embedding
    lens** (hidden · Eᵀ, no norm — the paper's lens for video tokens) and the **logit
    lens** (final norm + ``lm_head``). For each frame the view lists the words found most
    often among its tokens' top ``k`` words; "×n" says in how many of the frame's tokens. By default
    the lenses rank only the closed word list ``bag="kit"`` (the question set's spatial and temporal
    words, :data:`flowkit.data.vocab.WORD_BAGS`), so the view answers "spatial or temporal?";
    ``bag=None`` ranks the whole vocabulary, where rare word pieces come first.
    Spatial words are marked S (blue), temporal words T (orange), as listed in
    :mod:`flowkit.data.vocab`.

    State: ``kind`` ('embedding' | 'logit'), ``layer`` (0-indexed; the view shows that
    layer's output) and ``spec_json`` (a :class:`~flowkit.intervention.spec.KnockoutSpec`, to look
    at the stream under a knockout). ``table`` is what the lenses read under the spec
    (:func:`~flowkit.views.view_models.lens_tables`); ``setup`` what never changes
    (:func:`~flowkit.views.view_models.lens_setup`: layers, frame labels, thumbnails, colours, question).

    Args:
        vllm: a :class:`flowkit.VideoLLM`.
        prompt: a :class:`flowkit.data.Sample` or a prepared prompt.
        kind, layer, spec: the initial state.
        k: top tokens read per video token; top: words listed per frame.
        frames: the video frames for thumbnails when ``prompt`` is prepared.
    """

    _esm = HERE / "lens_view.js"
    _css = HERE / "lens_view.css"

    # what changes
    kind = traitlets.Enum(list(LENS_KINDS), default_value="embedding").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    spec_json = traitlets.Unicode(KnockoutSpec().to_json()).tag(sync=True)
    table = traitlets.Dict().tag(sync=True)
    # what does not: sent once
    setup = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        vllm,
        prompt,
        *,
        kind: str = "embedding",
        layer: int = 0,
        spec: KnockoutSpec | None = None,
        k: int = 5,
        top: int = 5,
        frames=None,
        bag: str | None = "kit",
        **kwargs,
    ):
        from flowkit.data.vocab import WORD_BAGS

        if bag is not None and bag not in WORD_BAGS:
            raise FlowkitError(
                f"unknown word list {bag!r}: choose one of {sorted(WORD_BAGS)}, or None for the whole vocabulary"
            )
        prepared, frames, _options, question = resolve_prompt(vllm, prompt, frames)
        self._vllm, self._prepared, self._k, self._top, self._bag = vllm, prepared, k, top, bag
        self.top_words: dict = {}
        super().__init__(setup=lens_setup(prepared.spans, vllm.num_layers, frames, question, bag), kind=kind, **kwargs)
        self.layer = layer
        self.spec_json = (spec if spec is not None else KnockoutSpec()).to_json()
        self._compute()  # also when ``spec`` equals the default and no change was observed

    @property
    def num_layers(self) -> int:
        """The language model's layers (the slider's range)."""
        return self.setup["num_layers"]

    @property
    def frame_labels(self) -> list[str]:
        """One label per frame position."""
        return self.setup["frame_labels"]

    @traitlets.validate("layer")
    def _valid_layer(self, proposal):
        layer = proposal["value"]
        if not 0 <= layer < self.num_layers:
            raise traitlets.TraitError(f"layer must be in 0..{self.num_layers - 1}, got {layer}")
        return layer

    @traitlets.validate("spec_json")
    def _valid_spec(self, proposal):
        try:
            spec = applicable_spec(proposal["value"], self._prepared.spans, self.num_layers)
        except FlowkitError as exc:
            raise traitlets.TraitError(str(exc)) from None
        return spec.to_json()

    @traitlets.observe("spec_json")
    def _spec_changed(self, _change):
        self._compute()

    def _compute(self) -> None:
        """One forward pass under the spec, read through both lenses."""
        self.top_words, self.table = lens_tables(
            self._vllm, self._prepared, KnockoutSpec.from_json(self.spec_json), self._k, self._top, self._bag
        )

    def snapshot_chart(self):
        """What the view shows (current lens and layer) as a chart, for saved outputs."""
        from flowkit.views.plots import lens_words

        return lens_words(
            self.words(),
            f"LensView: {self.kind} lens after layer {self.layer}, {self.setup['ranked'].split(':')[0]} "
            "(a static picture: run the notebook to move the slider)",
            list(self.frame_labels) or None,
        )

    def words(self, kind: str | None = None, layer: int | None = None) -> Sequence[Sequence[dict]]:
        """What the view shows: per frame, the words (default: the current lens and layer)."""
        return self.table[kind or self.kind][self.layer if layer is None else layer]
