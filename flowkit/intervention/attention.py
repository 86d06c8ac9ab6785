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


_BIAS_ATTR = "_flowkit_bias_stack"


def _bias_for(module: torch.nn.Module) -> torch.Tensor | None:
    """The sum of the float biases pushed onto ``module`` for its layer (``(N, N)``), or None."""
    stack = getattr(module, _BIAS_ATTR, None)
    if not stack:
        return None
    layer = getattr(module, "layer_idx", None)
    found = [biases[layer] for biases in stack if layer in biases]
    if not found:
        return None
    total = found[0]
    for extra in found[1:]:
        total = total + extra
    return total


def _with_bias(attention_mask, bias: torch.Tensor, query: torch.Tensor, key: torch.Tensor):
    """``attention_mask`` as a float additive mask plus ``bias`` on the current queries' rows
    (differentiable in ``bias``). Positions beyond the ``(N, N)`` bias get none."""
    q_len, k_len = query.shape[2], key.shape[2]
    n = bias.shape[-1]
    bias = bias.to(device=query.device, dtype=query.dtype)
    if k_len > n:
        bias = torch.nn.functional.pad(bias, (0, k_len - n, 0, k_len - n))
    bias = bias[k_len - q_len : k_len, :k_len][None, None]
    if attention_mask is None:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)[None, None]
    elif attention_mask.dtype == torch.bool:
        allowed = attention_mask[..., :k_len]
    else:
        return attention_mask[..., :k_len].to(query.dtype) + bias
    floor = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill(~allowed, float("-inf"))
    return floor + bias


def _make_attention(base: str):
    """The ``flowkit_<base>`` attention function: the stock ``base`` attention of the module's
    family (:func:`_base_attention`), with the module's block masks cut out of its mask and its
    float biases (:func:`apply_attention_biases`) added to it."""

    def knockout_attention(module, query, key, value, attention_mask, **kwargs):
        base_fn = _base_attention(base, module)
        block = _blocked_for(module)
        if block is not None:
            attention_mask = _with_block(attention_mask, block, query, key)
        bias = _bias_for(module)
        if bias is not None:
            attention_mask = _with_bias(attention_mask, bias, query, key)
        return base_fn(module, query, key, value, attention_mask, **kwargs)

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
    with _pushed(language_model, _KNOCKOUT_ATTR, masks):
        yield


@contextlib.contextmanager
def apply_attention_biases(language_model: torch.nn.Module, biases: dict[int, torch.Tensor]) -> Iterator[None]:
    """Add float biases ``{layer: (N, N) float}`` to the attention scores (before the softmax) while inside.

    The gated attention of the pathway search (:mod:`flowkit.analysis.pathway_search`): a gate
    ``g`` on an edge adds ``log g`` to that edge's score in every head, so ``g = 1`` (bias 0) is
    the clean model and ``g -> 0`` (bias ``-> -inf``) the knockout. The biases stay in the autograd
    graph: the gradient of an output with respect to them is the gradient with respect to
    ``log g``. They add up with nested contexts and with :func:`apply_block_masks`' cuts; only
    the analysed prompt's ``N`` positions get a bias. The model is always restored on exit.
    """
    with _pushed(language_model, _BIAS_ATTR, biases):
        yield


@contextlib.contextmanager
def _pushed(language_model: torch.nn.Module, attr: str, item: dict) -> Iterator[None]:
    """Push ``item`` onto every attention module's ``attr`` stack and select flowkit's attention while inside."""
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
        if not hasattr(m, attr):
            setattr(m, attr, [])
        getattr(m, attr).append(item)
    if outermost:
        config._attn_implementation = f"flowkit_{current}"
    try:
        yield
    finally:
        for m in modules:
            stack = getattr(m, attr, [])
            if stack and stack[-1] is item:
                stack.pop()
            if not stack and hasattr(m, attr):
                delattr(m, attr)
        if outermost:
            config._attn_implementation = current
