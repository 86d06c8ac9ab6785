"""The only module that touches transformers' attention registration.

Knocking an edge out adds -inf to that attention score before the softmax, in every head,
in the chosen layers (Geva et al. 2023, as used in *Map the Flow*). flowkit registers
``flowkit_sdpa`` and ``flowkit_eager`` with transformers' ``AttentionInterface``; they
read the block masks that :func:`apply_block_masks` pushes onto each attention module and
otherwise call the stock attention. Models are always restored in ``finally``.

>>> with knockout(vllm, spec, spans):          # doctest: +SKIP
...     logits = vllm.model(**inputs).logits
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from flowkit.errors import KnockoutError
from flowkit.masks import block_masks
from flowkit.spec import KnockoutSpec
from flowkit.spans import Spans


# ------------------------------------------------------------------ attention function

_KNOCKOUT_ATTR = "_flowkit_knockout_stack"
SUPPORTED_BASES = ("sdpa", "eager")


def _blocked_for(module: torch.nn.Module) -> torch.Tensor | None:
    stack = getattr(module, _KNOCKOUT_ATTR, None)
    if not stack:
        return None
    layer = getattr(module, "layer_idx", None)
    found = [masks[layer] for masks in stack if layer in masks]
    if not found:
        return None
    block = found[0]
    for extra in found[1:]:
        block = block | extra
    return block


def _slice_block(block: torch.Tensor, q_len: int, k_len: int) -> torch.Tensor:
    """Block-mask rows of the current queries (the last ``q_len`` of ``k_len`` positions).

    ``block`` is ``(N, N)`` or, for a batch of different specs, ``(B, N, N)``.
    """
    n = block.shape[-1]
    if k_len > n:  # positions beyond the analysed prompt (e.g. generated tokens) are never cut
        padded = torch.zeros(*block.shape[:-2], k_len, k_len, dtype=torch.bool, device=block.device)
        padded[..., :n, :n] = block
        block = padded
    return block[..., k_len - q_len : k_len, :k_len]


def _with_block(attention_mask, block: torch.Tensor, query: torch.Tensor, key: torch.Tensor):
    q_len, k_len = query.shape[2], key.shape[2]
    blk = _slice_block(block.to(query.device), q_len, k_len)
    blk = blk[:, None] if blk.ndim == 3 else blk[None, None]  # broadcast over heads (and batch)
    if attention_mask is None:  # the stock path relied on is_causal: build the causal mask explicitly
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        return allowed[None, None] & ~blk
    if attention_mask.dtype == torch.bool:
        return attention_mask[..., :k_len] & ~blk
    return attention_mask[..., :k_len].masked_fill(blk, float("-inf"))


def _make_attention(base: str):
    def knockout_attention(module, query, key, value, attention_mask, **kwargs):
        base_fn = _base_attention(base)
        block = _blocked_for(module)
        if block is None:
            return base_fn(module, query, key, value, attention_mask, **kwargs)
        return base_fn(module, query, key, value, _with_block(attention_mask, block, query, key), **kwargs)

    knockout_attention.__name__ = f"flowkit_{base}_attention"
    return knockout_attention


def _base_attention(base: str):
    if base == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    for base, mask_fn in (("sdpa", sdpa_mask), ("eager", eager_mask)):
        AttentionInterface.register(f"flowkit_{base}", _make_attention(base))
        AttentionMaskInterface.register(f"flowkit_{base}", mask_fn)


_register()


# ------------------------------------------------------------------- context manager


def language_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack (``.layers``) of a VideoLLM's language model."""
    for path in ("model.language_model", "language_model", "model.model", "model"):
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "layers") and hasattr(obj, "config"):
            return obj
    if hasattr(model, "layers") and hasattr(model, "config"):
        return model
    raise KnockoutError(
        f"cannot find the language model's decoder layers in {type(model).__name__}; "
        "flowkit expects `model.model.language_model.layers` as in transformers' VideoLLMs."
    )


def attention_modules(language_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer, in order."""
    modules = []
    for i, layer in enumerate(language_model.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or getattr(attn, "layer_idx", i) != i:
            raise KnockoutError(f"decoder layer {i} has no `self_attn` with layer_idx={i}; unsupported architecture.")
        modules.append(attn)
    return modules


@contextlib.contextmanager
def knockout(model, spec: KnockoutSpec, spans: Spans) -> Iterator[dict[int, torch.Tensor]]:
    """Apply ``spec`` to the language model of ``model`` (a VideoLLM or HF model) while inside.

    Contexts nest (their cuts add up). The model is always restored on exit, even on
    error. Yields the per-layer block masks.
    """
    lm = language_model_of(_hf_model(model))
    masks = block_masks(spec, spans, len(attention_modules(lm)))
    with apply_block_masks(lm, masks):
        yield masks


def _hf_model(model) -> torch.nn.Module:
    return model.model if hasattr(model, "adapter") else model


@contextlib.contextmanager
def apply_block_masks(language_model: torch.nn.Module, masks: dict[int, torch.Tensor]) -> Iterator[None]:
    """Low level: cut the edges of ready-made block masks ``{layer: (N, N) or (B, N, N) bool}``.

    :func:`knockout` builds and checks the masks from a spec; the engine uses this directly
    to evaluate a batch of specs at once (one ``(N, N)`` mask per batch row).
    """
    modules = attention_modules(language_model)
    config = language_model.config
    current = config._attn_implementation
    outermost = not (isinstance(current, str) and current.startswith("flowkit_"))
    if outermost and current not in SUPPORTED_BASES:
        raise KnockoutError(
            f"knockout needs the language model to use 'sdpa' or 'eager' attention, not {current!r}. "
            "Load the model with attn_implementation='sdpa' (or 'eager' to read attention weights)."
        )
    for m in modules:
        if not hasattr(m, _KNOCKOUT_ATTR):
            setattr(m, _KNOCKOUT_ATTR, [])
        getattr(m, _KNOCKOUT_ATTR).append(masks)
    if outermost:
        config._attn_implementation = f"flowkit_{current}"
    try:
        yield
    finally:
        for m in modules:
            stack = getattr(m, _KNOCKOUT_ATTR, [])
            if stack and stack[-1] is masks:
                stack.pop()
            if not stack and hasattr(m, _KNOCKOUT_ATTR):
                delattr(m, _KNOCKOUT_ATTR)
        if outermost:
            config._attn_implementation = current
