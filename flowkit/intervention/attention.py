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
import sys
from collections.abc import Iterator

import torch

from flowkit.errors import KnockoutError
from flowkit.families import EAGER_BASE_ATTR, attention_modules, language_model_of
from flowkit.intervention.masks import block_masks
from flowkit.intervention.spec import KnockoutSpec
from flowkit.prompts.spans import Spans


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
    """The ``flowkit_<base>`` attention function: the stock ``base`` attention of the module's
    family (:func:`_base_attention`), with the module's block masks cut out of its mask."""

    def knockout_attention(module, query, key, value, attention_mask, **kwargs):
        base_fn = _base_attention(base, module)
        block = _blocked_for(module)
        if block is None:
            return base_fn(module, query, key, value, attention_mask, **kwargs)
        return base_fn(module, query, key, value, _with_block(attention_mask, block, query, key), **kwargs)

    knockout_attention.__name__ = f"flowkit_{base}_attention"
    return knockout_attention


def _base_attention(base: str, module: torch.nn.Module | None = None):
    """The stock attention function that knocked-out ``base`` attention wraps for ``module``.

    ``"sdpa"``: transformers' ``sdpa_attention_forward``, for every family. ``"eager"``: the
    eager attention the module's family declares (``FamilyAdapter.attention_base``), which
    :func:`flowkit.families.language_model_of` puts on each attention module of the decoder it returns. A
    decoder reached without a family (a bare transformers decoder given to
    :func:`apply_block_masks`) gets the ``eager_attention_forward`` of its attention class's own
    modeling module: what transformers itself runs for that class under ``"eager"``.
    """
    if base == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    declared = getattr(module, EAGER_BASE_ATTR, None)
    if declared is not None:
        return declared
    own = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if own is None:
        raise KnockoutError(
            f"no eager attention is known for {type(module).__name__}: get the decoder with "
            "flowkit.families.language_model_of (or VideoLLM.language_model), which applies the family's "
            "declared attention_base."
        )
    return own


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    for base, mask_fn in (("sdpa", sdpa_mask), ("eager", eager_mask)):
        AttentionInterface.register(f"flowkit_{base}", _make_attention(base))
        AttentionMaskInterface.register(f"flowkit_{base}", mask_fn)


_register()


# ------------------------------------------------------------------- context manager


@contextlib.contextmanager
def knockout(model, spec: KnockoutSpec, spans: Spans) -> Iterator[dict[int, torch.Tensor]]:
    """Apply ``spec`` to the language model of ``model`` (a VideoLLM or HF model) while inside.

    Contexts nest (their cuts add up). The model is always restored on exit, even on
    error. Yields the per-layer block masks.
    """
    lm = language_model_of(model)
    masks = block_masks(spec, spans, len(attention_modules(lm)))
    with apply_block_masks(lm, masks):
        yield masks


@contextlib.contextmanager
def apply_block_masks(language_model: torch.nn.Module, masks: dict[int, torch.Tensor]) -> Iterator[None]:
    """Low level: cut the edges of ready-made block masks ``{layer: (N, N) or (B, N, N) bool}``.

    :func:`knockout` builds and checks the masks from a spec; :class:`flowkit.intervention.session.Session` uses
    this directly to evaluate a batch of specs at once (one ``(N, N)`` mask per batch row).
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
