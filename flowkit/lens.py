"""Look inside: the residual stream at every layer, read through a logit lens or an embedding lens.

- **logit lens**: final norm + ``lm_head`` applied to a layer's hidden state (nostalgebraist).
- **embedding lens** (what *Map the Flow*'s code does for video tokens): the hidden state
  multiplied by the transposed *input* embedding matrix, no final norm.

``residual_stream`` index 0 is the language model's input (text embeddings with the
projected video features merged in); index ``l + 1`` is the output of layer ``l``
(before the final norm).
"""

from __future__ import annotations

from typing import Sequence

import torch

from flowkit.knockout import KnockoutSpec, knockout


@torch.inference_mode()
def residual_stream(vllm, prepared, spec: KnockoutSpec | None = None) -> torch.Tensor:
    """Hidden states ``(num_layers + 1, seq_len, d_model)`` of one prompt (float32)."""
    lm = vllm.language_model
    captured: list[torch.Tensor] = []

    def grab_input(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        captured.append(hidden[0].detach().float())

    def grab_output(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        captured.append(hidden[0].detach().float())

    handles = [lm.layers[0].register_forward_pre_hook(grab_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(grab_output) for layer in lm.layers]
    try:
        if spec is not None and spec.cuts:
            with knockout(vllm, spec, prepared.spans):
                vllm.model(**prepared.inputs, logits_to_keep=1)
        else:
            vllm.model(**prepared.inputs, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(captured)


def _lm_head_weight(vllm) -> torch.Tensor:
    head = vllm.model.get_output_embeddings()
    return _dense_weight(head)


def _dense_weight(module) -> torch.Tensor:
    weight = module.weight
    if hasattr(weight, "quant_state") and weight.quant_state is not None:  # a 4-bit layer
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()
    return weight.detach().float()


@torch.inference_mode()
def logit_lens(vllm, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (``..., vocab``) of hidden states through the final norm and ``lm_head``."""
    norm = vllm.language_model.norm
    normed = norm(hidden.to(next(norm.parameters()).dtype)).float()
    return normed @ _lm_head_weight(vllm).T


@torch.inference_mode()
def embedding_lens(vllm, hidden: torch.Tensor) -> torch.Tensor:
    """Scores (``..., vocab``) of hidden states against the input embedding matrix (no norm)."""
    embeddings = vllm.language_model.get_input_embeddings().weight.detach().float()
    return hidden.float() @ embeddings.T


def top_tokens(vllm, scores: torch.Tensor, k: int = 5) -> list[list[str]]:
    """The ``k`` best-scoring tokens (decoded, stripped) for each row of ``scores``."""
    tokenizer = vllm.tokenizer
    rows = scores.reshape(-1, scores.shape[-1])
    ids = rows.topk(k, dim=-1).indices.tolist()
    return [[tokenizer.decode([i]).strip() for i in row] for row in ids]


def lens_at(vllm, prepared, layer: int, positions: Sequence[int], kind: str = "logit", k: int = 5,
            spec: KnockoutSpec | None = None) -> list[list[str]]:
    """Top-k decoded tokens at ``positions`` after layer ``layer`` (``kind``: 'logit' or 'embedding')."""
    stream = residual_stream(vllm, prepared, spec)
    if not 0 <= layer < stream.shape[0] - 1:
        raise ValueError(f"layer must be in 0..{stream.shape[0] - 2}")
    hidden = stream[layer + 1, list(positions)]
    scores = logit_lens(vllm, hidden) if kind == "logit" else embedding_lens(vllm, hidden)
    return top_tokens(vllm, scores, k)
