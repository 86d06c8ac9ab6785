"""Evaluate many knockout specs on one prompt, recomputing only what a knockout can change.

Two facts make most of a knockout sweep redundant:

1. **Nothing before the first cut layer changes.** Layers ``0 .. a-1`` see exactly the
   clean inputs, so a spec whose earliest cut layer is ``a`` can start from the clean
   residual stream entering layer ``a``.
2. **Nothing upstream of the first cut query changes.** Attention is causal: a position
   ``p`` earlier than every query row that loses an edge computes exactly as in the clean
   run, in every layer. So only positions ``p0 .. N-1`` need recomputing, reading the
   clean keys and values of positions ``< p0`` from a cache. For edges into the last
   position (``video->last``, ``question->last``, ``last->last``) that is one token.

:class:`Engine` runs the clean forward once per prompt, keeps the residual stream
entering every layer and every layer's keys/values, and replays layers ``a .. L-1`` on
positions ``p0 .. N-1`` for each spec — several specs at once as one batch when they
share ``p0``. Results match a full forward under the same spec to float rounding (the
tests check max |Δp| ≤ 1e-5 in fp32); the replay is plain transformers decoder layers
under the same attention function, so 4-bit models work the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from flowkit.families import Prepared
from flowkit.knockout import KnockoutSpec, apply_block_masks, block_masks
from flowkit.readout import AnswerDistribution, answer_distribution

#: replay batches hold at most this many recomputed positions (rows) at once
DEFAULT_ROW_BUDGET = 1024


@dataclass(frozen=True)
class Plan:
    """What the engine recomputes for one spec: layers ``first_layer ..`` at positions ``first_position ..``."""

    first_layer: int
    first_position: int
    num_layers: int
    seq_len: int

    @property
    def layer_positions(self) -> int:
        """Layers recomputed x positions recomputed: the work a knockout cannot avoid."""
        return (self.num_layers - self.first_layer) * (self.seq_len - self.first_position)


class _PrefixCache:
    """The clean keys/values of positions ``< p0``, prepended to what the replay computes.

    It stands in for a transformers ``Cache`` in a decoder layer's attention, which only
    calls ``update``. Nothing is stored: every replay starts from the same clean prefix.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], batch: int):
        self.keys, self.values, self.batch = keys, values, batch

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        prefix_k = self.keys[layer_idx].expand(self.batch, -1, -1, -1)
        prefix_v = self.values[layer_idx].expand(self.batch, -1, -1, -1)
        return torch.cat([prefix_k, key_states], dim=2), torch.cat([prefix_v, value_states], dim=2)


class Engine:
    """Knockout evaluation for one prepared prompt, reusing its clean forward pass.

    >>> engine = Engine(vllm, prepared)                               # doctest: +SKIP
    >>> engine.answer(KnockoutSpec.single("question->last", LayerWindow(20)))
    """

    def __init__(self, vllm, prepared: Prepared, row_budget: int = DEFAULT_ROW_BUDGET):
        self.vllm, self.prepared, self.row_budget = vllm, prepared, row_budget
        self.lm = vllm.language_model
        self.layers = list(self.lm.layers)
        self.num_layers = len(self.layers)
        self.spans = prepared.spans
        self.replay = bool(getattr(vllm.adapter, "supports_engine_replay", False))
        self._run_clean()

    # ------------------------------------------------------------------ clean run
    @torch.inference_mode()
    def _run_clean(self) -> None:
        hidden_in: list[torch.Tensor] = [None] * self.num_layers
        layer_kwargs: dict = {}

        def grab(index):
            def hook(_module, args, kwargs):
                hidden_in[index] = args[0] if args else kwargs["hidden_states"]
                if index == 0:
                    layer_kwargs.update(kwargs)
            return hook

        handles = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        try:
            out = self.vllm.model(**self.prepared.inputs, use_cache=True, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self.hidden_in = hidden_in
        self.keys = [cache.layers[i].keys for i in range(self.num_layers)]
        self.values = [cache.layers[i].values for i in range(self.num_layers)]
        self.position_embeddings = layer_kwargs.get("position_embeddings")
        self.position_ids = layer_kwargs.get("position_ids")
        self.clean_logits = out.logits[0, -1].float()
        if hidden_in[0].shape[0] != 1:
            raise ValueError("the engine evaluates one prompt at a time (batch size 1)")

    # ---------------------------------------------------------------------- plans
    def plan(self, spec: KnockoutSpec, masks: dict[int, torch.Tensor] | None = None) -> Plan:
        """The cheapest exact recomputation for ``spec``."""
        n = self.spans.seq_len
        if masks is None:
            masks = block_masks(spec, self.spans, self.num_layers)
        if not masks or not any(m.any() for m in masks.values()):
            return Plan(self.num_layers, n, self.num_layers, n)  # nothing is cut: the clean run answers
        first_layer = min(layer for layer, m in masks.items() if m.any())
        rows = torch.stack([m.any(dim=1) for m in masks.values()]).any(dim=0)
        first_position = int(rows.nonzero()[0])
        return Plan(first_layer, first_position, self.num_layers, n)

    # -------------------------------------------------------------------- evaluate
    def last_logits(self, specs: Sequence[KnockoutSpec]) -> list[torch.Tensor]:
        """Logits at the last position under each spec (float32, ``(vocab,)`` each)."""
        if not self.replay:  # this family's decoder cannot be replayed layer by layer: full forwards
            return [self.vllm.last_logits(self.prepared, spec) for spec in specs]
        prepared = [(spec, block_masks(spec, self.spans, self.num_layers)) for spec in specs]
        plans = [self.plan(spec, masks) for spec, masks in prepared]
        results: list[torch.Tensor | None] = [None] * len(specs)
        groups: dict[int, list[int]] = {}
        for i, plan in enumerate(plans):
            if plan.first_layer >= self.num_layers:
                results[i] = self.clean_logits
            else:
                groups.setdefault(plan.first_position, []).append(i)
        for first_position, members in groups.items():
            rows = self.spans.seq_len - first_position
            per_batch = max(1, self.row_budget // rows)
            members.sort(key=lambda i: plans[i].first_layer)
            for start in range(0, len(members), per_batch):
                chunk = members[start : start + per_batch]
                first_layer = plans[chunk[0]].first_layer
                logits = self._replay([prepared[i][1] for i in chunk], first_layer, first_position)
                for row, i in enumerate(chunk):
                    results[i] = logits[row]
        return results

    def answers(self, specs: Sequence[KnockoutSpec]) -> list[AnswerDistribution]:
        """Answer distributions under each spec."""
        return [answer_distribution(l, self.prepared.letter_ids, self.spans.true_option)
                for l in self.last_logits(specs)]

    def answer(self, spec: KnockoutSpec) -> AnswerDistribution:
        return self.answers([spec])[0]

    @property
    def clean_answer(self) -> AnswerDistribution:
        return answer_distribution(self.clean_logits, self.prepared.letter_ids, self.spans.true_option)

    # ---------------------------------------------------------------------- replay
    @torch.inference_mode()
    def _replay(self, masks_per_spec: list[dict[int, torch.Tensor]], first_layer: int, p0: int) -> torch.Tensor:
        batch, n = len(masks_per_spec), self.spans.seq_len
        q = n - p0
        hidden = self.hidden_in[first_layer][:, p0:].expand(batch, -1, -1).contiguous()
        cos, sin = self.position_embeddings
        position_embeddings = (cos[..., p0:, :], sin[..., p0:, :])
        position_ids = self.position_ids[..., p0:] if self.position_ids is not None else None
        attention_mask = self._causal_mask(q, n, hidden.dtype)
        cache = _PrefixCache([k[:, :, :p0] for k in self.keys], [v[:, :, :p0] for v in self.values], batch) if p0 else None
        layered: dict[int, torch.Tensor] = {}
        for layer in range(first_layer, self.num_layers):
            if any(layer in m for m in masks_per_spec):
                empty = torch.zeros(n, n, dtype=torch.bool)
                layered[layer] = torch.stack([m.get(layer, empty) for m in masks_per_spec])
        with apply_block_masks(self.lm, layered):
            for layer in self.layers[first_layer:]:
                out = layer(hidden, attention_mask=attention_mask, position_ids=position_ids,
                            position_embeddings=position_embeddings, cache=cache, use_cache=False)
                hidden = out[0] if isinstance(out, tuple) else out
        hidden = self.lm.norm(hidden)[:, -1:]
        return self.vllm.model.lm_head(hidden)[:, 0].float()

    def _causal_mask(self, q: int, n: int, dtype: torch.dtype) -> torch.Tensor:
        allowed = torch.ones(q, n, dtype=torch.bool).tril(n - q)[None, None]
        if self.lm.config._attn_implementation in ("eager", "flowkit_eager"):
            return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        return allowed
