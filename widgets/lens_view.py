"""LensView: what each frame's video tokens "say" after each layer, through a lens."""

from __future__ import annotations

from typing import Sequence

import anywidget
import traitlets

from flowkit.errors import FlowkitError
from flowkit.thumbnails import frame_thumbnails
from flowkit.view_models import lens_view_table, resolve_prompt
from flowkit.spec import KnockoutSpec
from flowkit.masks import block_masks
from flowkit.lens import LENS_KINDS, activations, frame_top_words
from flowkit.plots import WORD_KIND_COLORS
from widgets.assets import view_source
from widgets.snapshot import Snapshot


class LensView(Snapshot, anywidget.AnyWidget):
    """Per frame, the words its video tokens decode to after a chosen layer.

    >>> LensView(vllm, sample)                                # doctest: +SKIP
    >>> LensView(vllm, sample, kind="logit", layer=20)        # doctest: +SKIP

    The residual stream is computed once (under ``spec_json``, default: no knockout) and
    read through both lenses (:func:`flowkit.lens.frame_top_words`): the **embedding
    lens** (hidden · Eᵀ, no norm — the paper's lens for video tokens) and the **logit
    lens** (final norm + ``lm_head``). For each frame the view lists the words found most
    often among its tokens' top ``k`` words; "×n" says in how many of the frame's tokens.
    Spatial words are marked S (blue), temporal words T (orange), as listed in
    :mod:`flowkit.data.vocab`.

    State: ``kind`` ('embedding' | 'logit'), ``layer`` (0-indexed; the view shows that
    layer's output) and ``spec_json`` (a :class:`~flowkit.spec.KnockoutSpec`, to look
    at the stream under a knockout).

    Args:
        vllm: a :class:`flowkit.VideoLLM`.
        prompt: a :class:`flowkit.data.Sample` or a prepared prompt.
        kind, layer, spec: the initial state.
        k: top tokens read per video token; top: words listed per frame.
        frames: the video frames for thumbnails when ``prompt`` is prepared.
    """

    _esm, _css = view_source("lens_view")

    kind = traitlets.Enum(list(LENS_KINDS), default_value="embedding").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    spec_json = traitlets.Unicode(KnockoutSpec().to_json()).tag(sync=True)
    num_layers = traitlets.Int(0).tag(sync=True)
    frame_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    thumbnails = traitlets.List(traitlets.Unicode()).tag(sync=True)
    table = traitlets.Dict().tag(sync=True)
    kind_colors = traitlets.Dict(dict(WORD_KIND_COLORS)).tag(sync=True)
    question = traitlets.Unicode("").tag(sync=True)

    def __init__(self, vllm, prompt, *, kind: str = "embedding", layer: int = 0, spec: KnockoutSpec | None = None,
                 k: int = 5, top: int = 5, frames=None, **kwargs):
        prepared, frames, _options, question = resolve_prompt(vllm, prompt, frames)
        self._vllm, self._prepared, self._k, self._top = vllm, prepared, k, top
        spans = prepared.spans
        per = spans.frames_per_span
        labels = [f"frame {i}" if per == 1 else f"frames {i * per}–{(i + 1) * per - 1}"
                  for i in range(spans.num_frames)]
        thumbs = frame_thumbnails(frames[::per][: spans.num_frames]) if frames is not None else []
        self.top_words: dict = {}
        super().__init__(num_layers=vllm.num_layers, frame_labels=labels, thumbnails=thumbs, question=question,
                         kind=kind, **kwargs)
        self.layer = layer
        self.spec_json = (spec if spec is not None else KnockoutSpec()).to_json()
        self._compute()  # also when ``spec`` equals the default and no change was observed

    @traitlets.validate("layer")
    def _valid_layer(self, proposal):
        layer = proposal["value"]
        if not 0 <= layer < self.num_layers:
            raise traitlets.TraitError(f"layer must be in 0..{self.num_layers - 1}, got {layer}")
        return layer

    @traitlets.validate("spec_json")
    def _valid_spec(self, proposal):
        try:
            spec = KnockoutSpec.from_json(proposal["value"])
            block_masks(spec, self._prepared.spans, self.num_layers)  # refuses a spec that cannot be applied
        except FlowkitError as exc:
            raise traitlets.TraitError(str(exc)) from None
        return spec.to_json()

    @traitlets.observe("spec_json")
    def _spec_changed(self, _change):
        self._compute()

    def _compute(self) -> None:
        """One forward pass under the spec, read through both lenses."""
        cache = activations(self._vllm, self._prepared, KnockoutSpec.from_json(self.spec_json))
        spans = self._prepared.spans
        self.top_words = {kind: frame_top_words(self._vllm, self._prepared, kind, self._k, cache=cache)
                          for kind in LENS_KINDS}
        self.table = {kind: lens_view_table(words, self.num_layers, spans.num_frames, self._top)
                      for kind, words in self.top_words.items()}

    def snapshot_chart(self):
        """What the view shows (current lens and layer) as a chart, for saved outputs."""
        from flowkit.plots import lens_words

        return lens_words(self.words(), f"LensView: {self.kind} lens after layer {self.layer} "
                                         "(a static picture: run the notebook to move the slider)",
                          list(self.frame_labels) or None)

    def words(self, kind: str | None = None, layer: int | None = None) -> Sequence[Sequence[dict]]:
        """What the view shows: per frame, the words (default: the current lens and layer)."""
        return self.table[kind or self.kind][self.layer if layer is None else layer]
