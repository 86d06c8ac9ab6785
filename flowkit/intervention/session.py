"""One prompt, one entry point: its clean run, its named activations, and its answers under any knockout.

>>> session = vllm.session(prepared)                                  # doctest: +SKIP
>>> session.clean_answer                                              # the clean forward, run once
>>> session.answers([KnockoutSpec.single("question->last", LayerWindow(20)), pathway_masks, None])
>>> session.cache.resid_post(12)                                      # the stream leaving layer 12

Everything flowkit computes on a prompt goes through a :class:`Session`: ``VideoLLM.answer``,
sweeps, the pathway experiment, the lens, the widgets' view-models and the command line.
A knockout is a :class:`~flowkit.intervention.spec.KnockoutSpec` or ready-made per-layer block masks
(``{layer: (N, N) bool}``); ``None`` is the clean run.

Evaluating many knockouts on one prompt recomputes only what a knockout can change.

Two facts make most of a knockout sweep redundant:

1. **Nothing before the first cut layer changes.** Layers ``0 .. a-1`` see exactly the
   clean inputs, so a spec whose earliest cut layer is ``a`` can start from the clean
   residual stream entering layer ``a``.
2. **Nothing upstream of the first cut query changes.** Attention is causal: a position
   ``p`` earlier than every query row that loses an edge computes exactly as in the clean
   run, in every layer. So only positions ``p0 .. N-1`` need recomputing, reading the
   clean keys and values of positions ``< p0`` from a cache. For edges into the last
   position (``video->last``, ``question->last``, ``last->last``) that is one token.

A :class:`Session` runs the clean forward once per prompt, keeps the residual stream
entering every layer and every layer's keys/values, and replays layers ``a .. L-1`` on
positions ``p0 .. N-1`` for each spec — several specs at once as one batch when they
share ``p0``. Results match a full forward under the same spec to float rounding (the
tests check max |Δp| ≤ 1e-5 in fp32); the replay is plain transformers decoder layers
under the same attention function, so 4-bit models work the same way.

Specs or raw masks alike: :meth:`Session.answers` takes either (pathway masks, random
controls, hand-made masks), so accuracy under any mask costs one clean run per prompt plus
batched replays. :meth:`Session.full_forward_logits` is one plain forward under a knockout
(the reference the replay is tested against). :meth:`Session.last_logits_resuming` serves
interactive clicks: it resumes from an earlier replay's residual stream where the new
masks agree with that replay's in the first layers.

Every supported family replays (its adapter's ``supports_replay``): the layers get the
clean run's own position embeddings (Qwen's multimodal rotary positions included) sliced at
the replayed positions, and Qwen3-VL's deepstack features are added after the same layers
as in the model. A language model with sliding-window layers is answered with full
forwards (``Session.fallback_reason``), since the replay builds one causal mask for all layers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from flowkit.families import Prepared, language_model_of
from flowkit.errors import KnockoutError
from flowkit.intervention.spec import KnockoutSpec
from flowkit.intervention.masks import refuse_empty_rows, block_masks
from flowkit.intervention.attention import apply_block_masks
from flowkit.prompts.readout import AnswerDistribution, answer_distribution

#: replay batches hold at most this many recomputed positions (rows) at once
DEFAULT_ROW_BUDGET = 1024


@dataclass(frozen=True)
class Plan:
    """What the session recomputes for one spec: layers ``first_layer ..`` at positions ``first_position ..``."""

    first_layer: int
    first_position: int
    num_layers: int
    seq_len: int

    @property
    def layer_positions(self) -> int:
        """Layers recomputed x positions recomputed: the work a knockout cannot avoid."""
        return (self.num_layers - self.first_layer) * (self.seq_len - self.first_position)


@dataclass(eq=False)
class Trace:
    """One replay kept for later clicks: its masks, logits, and the residual stream it computed.

    ``hidden[i]`` is ``(position, tensor)``: the stream entering layer ``first_layer + i`` at
    positions ``position ..`` (positions before it are the clean run's there).
    """

    masks: dict
    logits: torch.Tensor
    first_layer: int
    hidden: list
    #: whether this replay started from an earlier one's stream (not from the clean run)
    resumed: bool = False

    @property
    def first_position(self) -> int:
        return min(position for position, _ in self.hidden)


def _same_mask(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return (a is None or not a.any()) and (b is None or not b.any())
    return a is b or torch.equal(a, b)


class _PrefixCache:
    """The clean keys/values of positions ``< p0``, prepended to what the replay computes.

    It stands in for a transformers ``Cache`` in a decoder layer's attention, which only
    calls ``update``. Nothing is stored: every replay starts from the same clean prefix.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        batch = key_states.shape[0]  # the batch may grow from layer to layer (see Session._replay)
        prefix_k = self.keys[layer_idx].expand(batch, -1, -1, -1)
        prefix_v = self.values[layer_idx].expand(batch, -1, -1, -1)
        return torch.cat([prefix_k, key_states], dim=2), torch.cat([prefix_v, value_states], dim=2)


class ActivationCache:
    """Named activations of one forward pass: the residual stream entering and leaving every layer.

    Indexed by layer, no offsets to remember: ``resid_pre(l)`` enters layer ``l`` (``resid_pre(0)``
    is the language model's input: text embeddings with the video features merged in),
    ``resid_post(l)`` leaves it (before the final norm). They differ from ``resid_pre(l + 1)``
    only where the model adds something between layers (Qwen3-VL's deepstack features).
    Each returns float32 ``(positions, d_model)``; ``positions`` defaults to all.
    """

    def __init__(self, resid_pre: list[torch.Tensor], resid_post: dict[int, torch.Tensor]):
        self._pre, self._post = resid_pre, resid_post
        self.num_layers = len(resid_pre)

    def _layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not -self.num_layers <= layer < self.num_layers:
            raise IndexError(f"layer {layer!r} is not a layer of this model (0..{self.num_layers - 1})")
        return layer % self.num_layers

    @staticmethod
    def _read(hidden: torch.Tensor, positions) -> torch.Tensor:
        hidden = hidden[0] if hidden.dim() == 3 else hidden
        return (hidden if positions is None else hidden[positions]).detach().float()

    def resid_pre(self, layer: int, positions=None) -> torch.Tensor:
        """The residual stream entering ``layer``."""
        return self._read(self._pre[self._layer(layer)], positions)

    def resid_post(self, layer: int, positions=None) -> torch.Tensor:
        """The residual stream leaving ``layer`` (before the final norm)."""
        layer = self._layer(layer)
        hidden = self._post.get(layer)
        return self._read(self._pre[layer + 1] if hidden is None else hidden, positions)

    def resid_posts(self, positions=None) -> torch.Tensor:
        """The stream leaving every layer: ``(num_layers, positions, d_model)``."""
        return torch.stack([self.resid_post(layer, positions) for layer in range(self.num_layers)])

    def stream(self) -> torch.Tensor:
        """``(num_layers + 1, seq_len, d_model)``: the input, then the output of every layer."""
        return torch.stack([self.resid_pre(0)] + [self.resid_post(layer) for layer in range(self.num_layers)])


class Session:
    """Everything flowkit computes on one prepared prompt (see the module docstring).

    >>> session = vllm.session(prepared)                              # doctest: +SKIP
    >>> session.answer(KnockoutSpec.single("question->last", LayerWindow(20)))

    Args:
        replay: replay only what a knockout changes (default). ``False`` answers every
            knockout with a full forward (the former path, kept for comparison).
        row_budget: replay batches hold at most this many recomputed positions.

    The clean run happens on first use (``clean_logits``, ``cache``, or a replay).
    """

    def __init__(self, model, adapter, prepared: Prepared, row_budget: int = DEFAULT_ROW_BUDGET, replay: bool = True):
        #: the transformers model and its family adapter: all a session needs of the loaded VideoLLM
        self.model, self.adapter = model, adapter
        self.prepared, self.row_budget = prepared, row_budget
        self.lm = language_model_of(model, adapter)
        self.layers = list(self.lm.layers)
        self.num_layers = len(self.layers)
        self.spans = prepared.spans
        self.replay = bool(replay) and bool(getattr(adapter, "supports_replay", False))
        #: why this session answers with full forwards (None when it replays)
        self.fallback_reason: str | None = None
        if not replay:
            self.fallback_reason = "asked for full forwards (replay=False)"
        elif not self.replay:
            self.fallback_reason = f"the {getattr(adapter, 'family', '?')} adapter does not declare supports_replay"
        sliding = [t for t in getattr(self.lm.config, "layer_types", None) or () if t != "full_attention"]
        if (
            self.replay
            and sliding
            and getattr(self.lm.config, "sliding_window", None) is not None
            and self.lm.config.sliding_window < self.spans.seq_len
        ):
            # the replay builds one plain causal mask for every layer; a sliding window is narrower
            self.replay, self.fallback_reason = False, f"{len(sliding)} layers use sliding-window attention"
        self._clean_ran = False

    # ------------------------------------------------------------------ clean run
    def _ensure_clean(self) -> None:
        if not self._clean_ran:
            self._run_clean()
            self._clean_ran = True

    @property
    def clean_logits(self) -> torch.Tensor:
        """Logits at the last position of the clean run (float32, ``(vocab,)``)."""
        self._ensure_clean()
        return self._clean_logits

    @property
    def cache(self) -> ActivationCache:
        """The clean run's named activations (:class:`ActivationCache`)."""
        self._ensure_clean()
        return self._cache

    @torch.inference_mode()
    def _forward_with_cache(self, masks: Mapping[int, torch.Tensor] | None, use_cache: bool):
        """One full forward (under ``masks``), recording every layer's input and the outputs that differ."""
        hidden_in: list[torch.Tensor] = [None] * self.num_layers
        hidden_out: dict[int, torch.Tensor] = {}
        layer_kwargs: dict = {}
        lm_kwargs: dict = {}

        def grab(index):
            def hook(_module, args, kwargs):
                hidden_in[index] = args[0] if args else kwargs["hidden_states"]
                if index == 0:
                    layer_kwargs.update(kwargs)

            return hook

        def grab_out(index):
            def hook(_module, _args, output):
                # a layer's output is the next layer's input unless something is added in between
                if index == self.num_layers - 1 or index < len(lm_kwargs.get("deepstack_visual_embeds") or ()):
                    hidden_out[index] = output[0] if isinstance(output, tuple) else output

            return hook

        def grab_lm(_module, args, kwargs):
            lm_kwargs.update(kwargs)

        handles = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        handles += [layer.register_forward_hook(grab_out(i)) for i, layer in enumerate(self.layers)]
        handles.append(self.lm.register_forward_pre_hook(grab_lm, with_kwargs=True))
        try:
            with apply_block_masks(self.lm, masks) if masks else contextlib.nullcontext():
                out = self.model(**self.prepared.inputs, use_cache=use_cache, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
        if hidden_in[0].shape[0] != 1:
            raise ValueError("a session evaluates one prompt at a time (batch size 1)")
        return out, ActivationCache(hidden_in, hidden_out), layer_kwargs, lm_kwargs

    def _run_clean(self) -> None:
        out, self._cache, layer_kwargs, lm_kwargs = self._forward_with_cache(None, use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self.hidden_in = self._cache._pre
        self.keys = [cache.layers[i].keys for i in range(self.num_layers)]
        self.values = [cache.layers[i].values for i in range(self.num_layers)]
        self.position_embeddings = layer_kwargs.get("position_embeddings")
        self.position_ids = layer_kwargs.get("position_ids")
        self._clean_logits = out.logits[0, -1].float()
        # Qwen3-VL's deepstack: visual features added to the video positions' hidden states after
        # each of the first layers; the replay adds the same features after the same layers
        self.deepstack = list(lm_kwargs.get("deepstack_visual_embeds") or [])
        self.visual_pos_masks = lm_kwargs.get("visual_pos_masks")
        if self.deepstack and not hasattr(self.lm, "_deepstack_process"):
            self.replay, self.fallback_reason = False, "the language model injects deepstack features it cannot replay"

    def run_with_cache(self, knockout=None) -> ActivationCache:
        """The named activations of one full forward under ``knockout`` (a spec, raw masks, or None: the clean run's)."""
        masks = self._masks(knockout, 0)
        if not masks:
            return self.cache
        return self._forward_with_cache(masks, use_cache=False)[1]

    @torch.inference_mode()
    def full_forward_logits(self, knockout=None) -> torch.Tensor:
        """Logits at the last position of one plain forward under ``knockout`` (spec, raw masks or None).

        The reference path: no replay, no clean run needed. Float32, ``(vocab,)``.
        """
        masks = self._masks(knockout, 0)
        with apply_block_masks(self.lm, masks) if masks else contextlib.nullcontext():
            out = self.model(**self.prepared.inputs, logits_to_keep=1)
        return out.logits[0, -1].float()

    # ---------------------------------------------------------------------- plans
    def plan(self, spec: KnockoutSpec | None, masks: Mapping[int, torch.Tensor] | None = None) -> Plan:
        """The cheapest exact recomputation for ``spec`` (or for ready-made block ``masks``; then ``spec`` may be None)."""
        n = self.spans.seq_len
        if masks is None:
            if spec is None:
                raise KnockoutError("plan() needs a spec or its block masks")
            masks = block_masks(spec, self.spans, self.num_layers)
        if not masks or not any(m.any() for m in masks.values()):
            return Plan(self.num_layers, n, self.num_layers, n)  # nothing is cut: the clean run answers
        first_layer = min(layer for layer, m in masks.items() if m.any())
        rows = torch.stack([m.any(dim=1) for m in masks.values()]).any(dim=0)
        first_position = int(rows.nonzero()[0])
        return Plan(first_layer, first_position, self.num_layers, n)

    # -------------------------------------------------------------------- evaluate
    def last_logits(self, knockouts: Sequence, progress: bool = False) -> list[torch.Tensor]:
        """Logits at the last position under each knockout (float32, ``(vocab,)`` each).

        Each knockout is a :class:`~flowkit.intervention.spec.KnockoutSpec`, ready-made per-layer block masks
        ``{layer: (N, N) bool}`` (True = the query (row) <- key (column) edge is cut, as
        :func:`flowkit.intervention.masks.block_masks` or :mod:`flowkit.analysis.pathways` make them), or ``None`` /
        ``{}`` for the clean run. Knockouts that share a first cut row are replayed together as
        one batch, so many knockouts on one prompt cost one clean forward plus batched replays
        (exact to float rounding, see the module docstring). Without replay, one full forward each.

        Raises :class:`~flowkit.errors.KnockoutError` for a mask of the wrong shape or type, a
        layer outside the model, or a mask that leaves some query with no key to attend to.
        """
        checked = [self._masks(k, i) for i, k in enumerate(knockouts)]
        if self.replay:
            self._ensure_clean()  # may find the model cannot be replayed (see _run_clean)
        if not self.replay:
            return [self._full_forward(m) for m in tqdm(checked, desc="full forwards", disable=not progress)]
        return self._evaluate(checked, progress=progress)

    def answers(self, knockouts: Sequence, progress: bool = False) -> list[AnswerDistribution]:
        """Answer distributions under each knockout (spec, raw masks or None; see :meth:`last_logits`)."""
        return [
            answer_distribution(l, self.prepared.letter_ids, self.spans.true_option)
            for l in self.last_logits(knockouts, progress=progress)
        ]

    def answer(self, knockout=None) -> AnswerDistribution:
        """The answer distribution under one knockout (None: the clean run)."""
        return self.answers([knockout])[0]

    def full_forward_answer(self, knockout=None) -> AnswerDistribution:
        """The answer distribution of one plain forward under ``knockout`` (the reference path, no replay)."""
        return answer_distribution(self.full_forward_logits(knockout), self.prepared.letter_ids, self.spans.true_option)

    @property
    def clean_answer(self) -> AnswerDistribution:
        return answer_distribution(self.clean_logits, self.prepared.letter_ids, self.spans.true_option)

    def _masks(self, knockout, index: int) -> dict[int, torch.Tensor]:
        """A knockout (spec, raw masks or None) as checked per-layer masks (``{}``: the clean run)."""
        if isinstance(knockout, KnockoutSpec):  # block_masks builds and checks them
            return block_masks(knockout, self.spans, self.num_layers) if knockout.cuts else {}
        return self._check_masks(knockout, index)

    def _check_masks(self, masks: Mapping[int, torch.Tensor] | None, index: int) -> dict[int, torch.Tensor]:
        if not masks:
            return {}
        if not isinstance(masks, Mapping):
            raise KnockoutError(
                f"mask set {index} must be a dict {{layer: (N, N) bool tensor}}, got {type(masks).__name__}"
            )
        n, out = self.spans.seq_len, {}
        for layer, mask in masks.items():
            if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
                raise KnockoutError(
                    f"mask set {index}: layer {layer!r} is not a layer of this model (0..{self.num_layers - 1})."
                )
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n, n):
                what = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise KnockoutError(
                    f"mask set {index}, layer {layer}: expected a ({n}, {n}) bool tensor "
                    f"(this prompt has {n} tokens), got {what}."
                )
            out[layer] = mask
        for mask in {id(m): m for m in out.values()}.values():  # shared tensors are checked once
            if mask.any():
                refuse_empty_rows(mask, [f"mask set {index}"], min(l for l, m in out.items() if m is mask))
        return out

    def _full_forward(self, masks: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.full_forward_logits(masks) if masks else self.clean_logits

    def _evaluate(self, masks: list[dict[int, torch.Tensor]], progress: bool = False) -> list[torch.Tensor]:
        """Replay every mask set, batching those that share a first cut row (see :meth:`plan`)."""
        plans = [self.plan(None, m) for m in masks]
        results: list[torch.Tensor | None] = [None] * len(masks)
        groups: dict[int, list[int]] = {}
        for i, plan in enumerate(plans):
            if plan.first_layer >= self.num_layers:
                results[i] = self.clean_logits
            else:
                groups.setdefault(plan.first_position, []).append(i)
        chunks = []
        for first_position, members in groups.items():
            rows = self.spans.seq_len - first_position
            per_batch = max(1, self.row_budget // rows)
            members.sort(key=lambda i: plans[i].first_layer)
            chunks += [(first_position, members[s : s + per_batch]) for s in range(0, len(members), per_batch)]
        for first_position, chunk in tqdm(chunks, desc="replay", disable=not progress or len(chunks) < 2):
            logits = self._replay([masks[i] for i in chunk], [plans[i].first_layer for i in chunk], first_position)
            for row, i in enumerate(chunk):
                results[i] = logits[row]
        return results

    # ------------------------------------------------------------ interactive reuse
    def last_logits_resuming(
        self, masks: Mapping[int, torch.Tensor] | None, traces: Sequence[Trace] = ()
    ) -> tuple[torch.Tensor, Trace | None]:
        """Logits under one mask set, resuming from the earlier replay that saves the most work.

        A knockout grid's click usually changes the previous spec in a few layers: where the new
        masks equal an earlier replay's in layers ``0 .. d-1``, the residual stream entering
        layer ``d`` is that replay's, so only layers ``d ..`` are recomputed (at the positions
        that can differ). Exact like :meth:`last_logits`. Returns the logits and the
        new :class:`Trace` (None for the clean run) to pass back in later calls.
        """
        masks = self._check_masks(masks, 0)
        if self.replay:
            self._ensure_clean()
        if not self.replay:
            return self._full_forward(masks), None
        n, layers = self.spans.seq_len, self.num_layers
        plan = self.plan(None, masks)
        if plan.first_layer >= layers:
            return self.clean_logits, None
        best = (plan.layer_positions, plan.first_layer, plan.first_position, None)
        for trace in traces:
            diverge = next((l for l in range(layers) if not _same_mask(masks.get(l), trace.masks.get(l))), layers)
            if diverge >= layers:
                return trace.logits, trace
            if diverge <= trace.first_layer:
                continue  # the stream entering `diverge` is the clean run's: nothing to gain
            later = [m.any(dim=1) for l, m in masks.items() if l >= diverge and m.any()]
            cut_rows = torch.stack(later).any(dim=0).nonzero() if later else None
            first_cut = int(cut_rows[0]) if cut_rows is not None and len(cut_rows) else n
            p0 = min(trace.first_position, first_cut)
            cost = (layers - diverge) * (n - p0)
            if cost < best[0]:
                best = (cost, diverge, p0, trace)
        _, first_layer, p0, source = best
        start, inherited = None, []
        if source is not None:
            start = self._stream(source, first_layer, p0)
            inherited = source.hidden[: first_layer - source.first_layer]
        recorded: list[torch.Tensor] = []
        logits = self._replay([masks], first_layer, p0, start=start, trace=recorded)[0]
        first = source.first_layer if source is not None else first_layer
        return logits, Trace(masks, logits, first, inherited + [(p0, h) for h in recorded], source is not None)

    def _stream(self, trace: Trace, layer: int, p0: int) -> torch.Tensor:
        """The stream a trace saw entering ``layer``, at positions ``p0 ..`` (clean where it kept them)."""
        position, hidden = trace.hidden[layer - trace.first_layer]
        if p0 < position:
            return torch.cat([self.hidden_in[layer][:, p0:position], hidden], dim=1)
        return hidden[:, p0 - position :]

    # ---------------------------------------------------------------------- replay
    @torch.inference_mode()
    def _replay(
        self,
        masks_per_spec: list[dict[int, torch.Tensor]],
        first_layers: int | Sequence[int],
        p0: int,
        start: torch.Tensor | None = None,
        trace: list | None = None,
    ) -> torch.Tensor:
        """Layers ``first_layer ..`` at positions ``p0 ..`` for a batch of mask sets; last-position logits.

        ``first_layers`` is one layer for every mask set, or one per mask set in ascending order:
        the batch then grows as the replay reaches each set's first layer, where the set joins
        with the clean stream (no layer is recomputed that its masks cannot change).
        ``start`` (``(1, N - p0, d)``) replaces the clean residual stream entering ``first_layer``
        (the interactive view resumes from an earlier replay); ``trace`` (a list) receives the
        stream entering every replayed layer (batch of one).
        """
        batch, n = len(masks_per_spec), self.spans.seq_len
        if isinstance(first_layers, int):
            first_layers = [first_layers] * batch
        if list(first_layers) != sorted(first_layers) or len(first_layers) != batch:
            raise ValueError("first_layers must give one layer per mask set, in ascending order")
        first_layer, q = first_layers[0], n - p0
        if start is not None and (batch != 1):
            raise ValueError("a replay resumed from an earlier stream (start=) takes one mask set")
        hidden = self.hidden_in[first_layer][:, p0:] if start is None else start
        joining = {layer: first_layers.count(layer) for layer in set(first_layers)}
        hidden = hidden.expand(joining[first_layer], -1, -1).contiguous()
        cos, sin = self.position_embeddings
        position_embeddings = (cos[..., p0:, :], sin[..., p0:, :])
        position_ids = self.position_ids[..., p0:] if self.position_ids is not None else None
        attention_mask = self._causal_mask(q, n, hidden.dtype)
        cache = _PrefixCache([k[:, :, :p0] for k in self.keys], [v[:, :, :p0] for v in self.values]) if p0 else None
        layered: dict[int, torch.Tensor] = {}
        empty = torch.zeros(n, n, dtype=torch.bool)
        for layer in range(first_layer, self.num_layers):
            active = [m for m, joined in zip(masks_per_spec, first_layers) if joined <= layer]
            if any(layer in m for m in active):
                layered[layer] = torch.stack([m.get(layer, empty) for m in active])
        if self.deepstack:
            visual = self.visual_pos_masks[:, p0:]
            skipped = int(self.visual_pos_masks[:, :p0].sum())  # features of video positions before p0
        with apply_block_masks(self.lm, layered):
            for index in range(first_layer, self.num_layers):
                if index > first_layer and index in joining:  # mask sets whose first cut is here join
                    clean = self.hidden_in[index][:, p0:].expand(joining[index], -1, -1)
                    hidden = torch.cat([hidden, clean], dim=0)
                if trace is not None:
                    trace.append(hidden)
                out = self.layers[index](
                    hidden,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    position_embeddings=position_embeddings,
                    cache=cache,
                    use_cache=False,
                )
                hidden = out[0] if isinstance(out, tuple) else out
                if index < len(self.deepstack):
                    features = self.deepstack[index][skipped:].repeat(hidden.shape[0], 1)
                    hidden = self.lm._deepstack_process(hidden, visual.expand(hidden.shape[0], -1), features)
        hidden = self.lm.norm(hidden)[:, -1:]
        return self.model.lm_head(hidden)[:, 0].float()

    def _causal_mask(self, q: int, n: int, dtype: torch.dtype) -> torch.Tensor:
        allowed = torch.ones(q, n, dtype=torch.bool).tril(n - q)[None, None]
        if self.lm.config._attn_implementation in ("eager", "flowkit_eager"):
            return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        return allowed
