"""The seam every VideoLLM family plugs into.

A :class:`FamilyAdapter` knows, for one transformers model class, how to write a
multiple-choice prompt for N frames, turn frames into model inputs, find the
:class:`~flowkit.prompts.spans.Spans` in the real input ids, and which modules must stay
unquantized. It also declares what the family-agnostic knockout machinery
(:mod:`flowkit.intervention.attention`, :mod:`flowkit.intervention.session`) needs to know about the model: where
its decoder stack is, which stock eager attention its decoder runs, and whether the
session may replay its decoder layers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar
from collections.abc import Sequence

import numpy as np
import torch

from flowkit.errors import FlowkitError, KnockoutError
from flowkit.prompts.spans import OPTION_LETTERS, Spans

#: The prompt ends so that the next token is the option letter, as in the paper.
ANSWER_PREFIX = "Best option:("
INSTRUCTION = "Only give the best option."
#: where :func:`flowkit.families.language_model_of` puts the family's stock eager attention on
#: each attention module (read by :mod:`flowkit.intervention.attention`)
EAGER_BASE_ATTR = "_flowkit_eager_attention"


@dataclass
class Prepared:
    """A prepared prompt: model inputs for one question plus where everything sits in the sequence.

    The kit's words: a *prompt* is one of these (what ``vllm.prepare`` returns and
    ``vllm.session`` takes); ``prompt_text`` is its text; a question's *answer* is the correct
    option's letter (``Sample.answer``); what a model says is an *answer distribution*
    (:class:`flowkit.prompts.readout.AnswerDistribution`) over the option letters (``letter_ids``).
    """

    inputs: dict
    spans: Spans
    letter_ids: tuple[int, ...]
    prompt_text: str
    #: every frame of the clip is the same picture (a 1-frame clip sampled 8 times): a cross_frame cut means little
    identical_frames: bool = False

    @property
    def seq_len(self) -> int:
        return self.spans.seq_len


def question_body(
    question: str, candidates: Sequence[str], instruction_separator: str = "\n"
) -> tuple[str, tuple[int, int], list[tuple[int, int]]]:
    """The text after the video: question, lettered options, instruction.

    ``instruction_separator`` is written between the last option and the instruction
    (the paper's MVBench prompt writes ``" \n"``: its query and instruction are joined
    with a space). Returns the text, the character span of the question sentence and of
    each option line.
    """
    question = " ".join(str(question).split())
    if not question:
        raise FlowkitError("the question is empty: pass the question text to ask about the video.")
    if len(candidates) < 2:
        raise FlowkitError(f"a multiple-choice question needs at least 2 options, got {list(candidates)!r}.")
    if len(candidates) > len(OPTION_LETTERS):
        raise FlowkitError(f"at most {len(OPTION_LETTERS)} options are supported, got {len(candidates)}.")
    text = question
    question_span = (0, len(question))
    text += "\nOptions:"
    option_spans = []
    for letter, candidate in zip(OPTION_LETTERS, candidates):
        candidate = " ".join(str(candidate).split())
        if not candidate:
            raise FlowkitError(f"option {letter} is empty: every option needs some text.")
        line = f"({letter}) {candidate}"
        text += "\n"
        option_spans.append((len(text), len(text) + len(line)))
        text += line
    text += instruction_separator + INSTRUCTION
    return text, question_span, option_spans


def question_start_char(text: str, body_at: int, header: str) -> int:
    """Where the paper's question span starts in ``text``: at ``header`` if it is written right
    before the body (which starts at ``body_at``), else at the body (the question sentence)."""
    if header and text[max(0, body_at - len(header)) : body_at] == header:
        return body_at - len(header)
    return body_at


def char_span_to_tokens(offsets: Sequence[tuple[int, int]], span: tuple[int, int], shift: int) -> tuple[int, int]:
    """Token span (half-open, shifted by ``shift``) of the tokens overlapping a character span."""
    cs, ce = span
    hits = [i for i, (s, e) in enumerate(offsets) if s < ce and e > cs and e > s]
    if not hits:
        raise FlowkitError(f"no token covers characters {cs}..{ce}: the tokenizer dropped that text.")
    return (hits[0] + shift, hits[-1] + 1 + shift)


def attention_modules(language_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer, in order."""
    modules = []
    for i, layer in enumerate(language_model.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or getattr(attn, "layer_idx", i) != i:
            raise KnockoutError(f"decoder layer {i} has no `self_attn` with layer_idx={i}; unsupported architecture.")
        modules.append(attn)
    return modules


class FamilyAdapter:
    """Base class: one subclass per transformers VideoLLM class, in that family's own module.

    A family is declared in one place, its adapter class, and registered there with
    :func:`flowkit.families.registry.register_family` (a variant such as a converted PLLaVA
    checkpoint with :func:`~flowkit.families.registry.register_variant`). It declares:

    - :attr:`model_types` and :attr:`family`: which configs it handles, and its name;
    - :attr:`model_class_name`: the transformers model class it loads (:meth:`model_class`);
    - :attr:`decoder_path`: where the language model's decoder stack sits (:meth:`decoder`);
    - :attr:`attention_base`: whose stock eager attention knocked-out eager attention wraps
      (:meth:`eager_attention`);
    - :attr:`supports_replay`: whether the session may replay its decoder layers
      (every registered family states it in its own class body);
    - its frame layout: how the video's tokens split into frames
      (:meth:`flowkit.families.placeholder_base.PlaceholderVideoAdapterBase.frame_layout`).
    """

    #: ``config.model_type`` values this adapter handles.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: human-readable family name
    family: ClassVar[str] = ""
    #: name of the transformers model class the family's checkpoints load as (imported lazily
    #: from ``transformers`` by :meth:`model_class`)
    model_class_name: ClassVar[str] = ""
    #: attribute path from the loaded transformers model to the language model's decoder stack,
    #: the module holding ``.layers`` and ``.config`` (e.g. ``"model.language_model"``);
    #: :func:`flowkit.families.language_model_of` and ``VideoLLM.language_model`` follow it
    decoder_path: ClassVar[str] = ""
    #: the transformers modeling module whose ``eager_attention_forward`` the decoder's
    #: attention layers run under ``attn_implementation="eager"`` (that of the *language*
    #: model: e.g. ``"transformers.models.qwen2.modeling_qwen2"`` for a Qwen2 decoder, not a
    #: vision tower's); flowkit's knocked-out eager attention wraps that function. Knocked-out
    #: sdpa attention always wraps transformers' ``sdpa_attention_forward``.
    attention_base: ClassVar[str] = ""
    #: whether :class:`flowkit.intervention.session.Session` may replay decoder layers directly (the language
    #: model is a plain loop of decoder layers with nothing injected between them); otherwise
    #: the session answers every spec with a full forward, which is exact by definition. The
    #: session reads it from the adapter (absent counts as ``False``); every registered family
    #: must state it in its own class body, so that none replays, or stops replaying, by accident
    supports_replay: ClassVar[bool] = False
    #: text the chat template writes right before the question sentence that belongs to the
    #: paper's question span (the paper's PLLaVA prompt: ``"Question: "``); empty when the
    #: template has no such header, and then the question span starts at the question sentence
    question_header: ClassVar[str] = ""
    #: what :func:`question_body` writes between the last option and the instruction
    instruction_separator: ClassVar[str] = "\n"

    def model_class(self):
        """The model class to load checkpoints with: ``transformers.<model_class_name>``."""
        import transformers

        return getattr(transformers, self.model_class_name)

    def decoder(self, model: torch.nn.Module) -> torch.nn.Module:
        """The decoder stack (``.layers``, ``.config``) of ``model``, at :attr:`decoder_path`."""
        found = model
        for attr in self.decoder_path.split("."):
            found = getattr(found, attr, None)
            if found is None:
                break
        if found is None or not (hasattr(found, "layers") and hasattr(found, "config")):
            raise KnockoutError(
                f"{type(model).__name__} has no decoder stack (a module with `.layers` and `.config`) at "
                f"`{self.decoder_path}`, where the {self.family} adapter declares it; this is not a "
                f"{self.family} model, or its transformers class has a new layout (update `decoder_path`)."
            )
        return found

    @classmethod
    def eager_attention(cls):
        """The stock eager attention function of the family's decoder (see :attr:`attention_base`)."""
        function = getattr(importlib.import_module(cls.attention_base), "eager_attention_forward", None)
        if function is None:
            raise KnockoutError(
                f"{cls.attention_base} has no eager_attention_forward; the {cls.family} "
                "adapter declares a wrong attention_base."
            )
        return function

    @classmethod
    def undeclared(cls) -> list[str]:
        """The declarations a registered family lacks (empty when it declares them all)."""
        missing = [
            name
            for name in ("model_types", "family", "model_class_name", "decoder_path", "attention_base")
            if not getattr(cls, name)
        ]
        if "supports_replay" not in vars(cls):
            missing.append("supports_replay")
        return missing

    def skip_modules(self, model_or_config) -> list[str]:
        """Full module prefixes kept out of 4-bit quantization (``lm_head`` always included)."""
        raise NotImplementedError

    def prepare(
        self, processor, frames: np.ndarray, question: str, candidates: Sequence[str], answer_index: int | None = None
    ) -> Prepared:
        """Inputs, spans and option-letter ids for one multiple-choice question about ``frames``."""
        raise NotImplementedError

    # shared helpers -------------------------------------------------------------
    @staticmethod
    def check_frames(frames) -> np.ndarray:
        """Frames as a uint8 ``(T, H, W, 3)`` array, with a clear error otherwise."""
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().numpy()
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise FlowkitError(
                f"frames must be an array of shape (T, H, W, 3) (RGB, time first), got shape {frames.shape}."
            )
        if frames.shape[0] < 1:
            raise FlowkitError("the video has no frames.")
        if frames.dtype != np.uint8:
            if np.issubdtype(frames.dtype, np.floating) and frames.max() <= 1.0:
                frames = frames * 255.0
            frames = np.clip(frames, 0, 255).astype(np.uint8)
        return frames

    @staticmethod
    def letter_token_ids(tokenizer, num_options: int, tail: str = ANSWER_PREFIX) -> tuple[int, ...]:
        """Token id of each option letter as it follows ``tail`` (e.g. 'Best option:(')."""
        base = tokenizer(tail, add_special_tokens=False)["input_ids"]
        ids = []
        for letter in OPTION_LETTERS[:num_options]:
            full = tokenizer(tail + letter, add_special_tokens=False)["input_ids"]
            if full[: len(base)] != base or len(full) != len(base) + 1:
                raise FlowkitError(
                    f"the tokenizer does not write option letter {letter!r} after {tail!r} as one token; "
                    "this tokenizer cannot be read with a single next-token distribution."
                )
            ids.append(full[-1])
        if len(set(ids)) != len(ids):
            raise FlowkitError("two option letters share one token id; cannot tell the options apart.")
        return tuple(ids)
