"""Reading the answer: option-letter probabilities at the last position, the named readout rules, and the paper's metric.

Every rule that turns logits into an answer lives here, once, by name:

- **prediction rules** (:data:`PREDICTION_RULES`, which answer a question gets):
  ``"vocabulary"`` (the paper's code, the default wherever a number is set beside the paper's):
  the top token of the *whole vocabulary* after "Best option:("; a question whose top token is
  not one of this prompt's option-letter token ids (``letter_ids``) is wrong, and so left out of
  % change averages over correctly answered questions. ``"options"``: the most likely option
  letter (flowkit's rule before definitions version 3). On a model where a letter always wins
  the two agree.
- **emergence readouts** (:data:`EMERGENCE_READOUTS`, p(option letters) at the last position
  after every layer, finding 3): ``"paper"`` (``hidden · lm_headᵀ``, no final norm except at
  the last layer, whose output the model itself normalises: the paper's script without
  ``--layer_norm``), ``"logit_lens"`` (final norm at every layer), ``"options"`` (the logit lens
  renormalised over the option letters). Each is one function of the last position's residual
  stream; :func:`register_emergence_readout` adds one (e.g. a tuned lens) by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Sequence

import torch

from flowkit.formatting import format_prob
from flowkit.prompts.spans import OPTION_LETTERS

#: Which answer a question gets: ``"vocabulary"`` (the paper's: top token of the whole vocabulary,
#: a non-letter is wrong) or ``"options"`` (the most likely option letter).
PREDICTION_RULES = ("vocabulary", "options")
#: The rule used wherever a number is set beside the paper's.
PAPER_PREDICTION = "vocabulary"


def check_prediction_rule(prediction: str) -> str:
    """``prediction`` if it names a rule of :data:`PREDICTION_RULES`, else a ``ValueError`` that lists them."""
    if prediction not in PREDICTION_RULES:
        raise ValueError(
            f"unknown prediction rule {prediction!r}: choose 'vocabulary' (the paper's: the top token of the "
            "whole vocabulary, a non-letter is wrong) or 'options' (the most likely option letter)."
        )
    return prediction


@dataclass(frozen=True)
class AnswerDistribution:
    """The model's answer to one multiple-choice question.

    Attributes:
        probs: p(letter) for each option, from the softmax over the *whole* vocabulary
            (what the paper's % change is computed on).
        option_probs: the same renormalised over the options only (sums to 1).
        predicted: index of the most likely option letter (the ``"options"`` rule's answer;
            % change follows p of this option).
        true_option: index of the correct option, if known.
        top_token_id: the top token of the whole vocabulary (``None``: not recorded).
        top_option: the option whose letter token is ``top_token_id``; ``None`` when the top
            token is not one of this prompt's ``letter_ids`` (or was not recorded).
    """

    probs: tuple[float, ...]
    option_probs: tuple[float, ...]
    predicted: int
    true_option: int | None = None
    top_token_id: int | None = None
    top_option: int | None = None

    @property
    def letters(self) -> tuple[str, ...]:
        return OPTION_LETTERS[: len(self.probs)]

    @property
    def predicted_letter(self) -> str:
        return self.letters[self.predicted]

    @property
    def top_is_letter(self) -> bool:
        """Whether the whole vocabulary's top token is one of this prompt's option letters."""
        self._need_top()
        return self.top_option is not None

    def _need_top(self) -> None:
        if self.top_token_id is None:
            raise ValueError(
                "this answer distribution does not record the whole vocabulary's top token "
                "(build it with answer_distribution); use prediction='options'."
            )

    def prediction(self, rule: str = PAPER_PREDICTION) -> int | None:
        """The answer under a prediction rule: an option index, or ``None`` when the
        ``"vocabulary"`` rule's top token is not a letter."""
        if check_prediction_rule(rule) == "options":
            return self.predicted
        self._need_top()
        return self.top_option

    def is_correct(self, rule: str = PAPER_PREDICTION) -> bool | None:
        """Whether the answer under ``rule`` is the true option (``None`` if that is unknown)."""
        if self.true_option is None:
            return None
        return self.prediction(rule) == self.true_option

    @property
    def correct(self) -> bool | None:
        """:meth:`is_correct` under the paper's rule (``"vocabulary"``); falls back to the
        ``"options"`` rule only for a distribution built without its top token."""
        if self.true_option is None:
            return None
        return self.is_correct(PAPER_PREDICTION if self.top_token_id is not None else "options")

    def p(self, option: int | str) -> float:
        """Full-vocabulary probability of an option (index or letter)."""
        index = self.letters.index(option.upper()) if isinstance(option, str) else option
        return self.probs[index]

    def to_dict(self) -> dict:
        return {
            "letters": list(self.letters),
            "probs": list(self.probs),
            "option_probs": list(self.option_probs),
            "predicted": self.predicted,
            "true_option": self.true_option,
            "top_token_id": self.top_token_id,
            "top_option": self.top_option,
        }

    @classmethod
    def from_dict(cls, data: dict) -> AnswerDistribution:
        """The distribution :meth:`to_dict` wrote (e.g. a sweep's cached payload)."""
        return cls(
            probs=tuple(data["probs"]),
            option_probs=tuple(data["option_probs"]),
            predicted=data["predicted"],
            true_option=data.get("true_option"),
            top_token_id=data.get("top_token_id"),
            top_option=data.get("top_option"),
        )

    def __str__(self) -> str:
        cells = [
            f"{l}: {format_prob(p)}" + ("*" if i == self.true_option else "")
            for i, (l, p) in enumerate(zip(self.letters, self.option_probs))
        ]
        note = "" if self.top_token_id is None or self.top_option is not None else "; top token not a letter"
        return (
            f"predicted {self.predicted_letter}  ["
            + "  ".join(cells)
            + f"]  (* = correct; renormalised over options{note})"
        )


def answer_distribution(
    last_logits: torch.Tensor, letter_ids: Sequence[int], true_option: int | None = None
) -> AnswerDistribution:
    """Answer distribution from next-token logits at the last position (the whole vocabulary's
    top token is recorded, so either prediction rule can be read off it)."""
    logits = last_logits.float()
    ids = list(letter_ids)
    full = torch.softmax(logits, dim=-1)[ids]
    options = torch.softmax(logits[ids], dim=-1)
    top = int(torch.argmax(logits))
    return AnswerDistribution(
        probs=tuple(full.tolist()),
        option_probs=tuple(options.tolist()),
        predicted=int(torch.argmax(logits[ids])),
        true_option=true_option,
        top_token_id=top,
        top_option=ids.index(top) if top in ids else None,
    )


def percent_change(p_base: float, p_new: float) -> float:
    """The paper's metric: ``100 * (p_new - p_base) / p_base``."""
    if p_base <= 0:
        raise ValueError("p_base must be positive to compute a relative change")
    return 100.0 * (p_new - p_base) / p_base


def accuracy(distributions: Sequence[AnswerDistribution], prediction: str = PAPER_PREDICTION) -> float:
    """Share of questions answered correctly under a prediction rule (default: the paper's,
    ``"vocabulary"``; every distribution must know its true option)."""
    check_prediction_rule(prediction)
    if not distributions:
        raise ValueError("accuracy of no questions is undefined")
    if any(d.true_option is None for d in distributions):
        raise ValueError("accuracy needs the true option of every question")
    return sum(bool(d.is_correct(prediction)) for d in distributions) / len(distributions)


def non_letter_share(distributions: Sequence[AnswerDistribution]) -> float:
    """Share of questions whose whole-vocabulary top token is not one of their option letters
    (wrong under the ``"vocabulary"`` rule whatever the option probabilities say)."""
    if not distributions:
        raise ValueError("the non-letter share of no questions is undefined")
    return sum(not d.top_is_letter for d in distributions) / len(distributions)


# ------------------------------------------------------------------ emergence readouts

#: ``readout(hidden, norm, head, letter_ids) -> (layers, options)`` probabilities: ``hidden`` is
#: the last position's residual stream leaving every layer (``(num_layers, d_model)``, before the
#: final norm; row ``l`` = ``resid_post(l)``), ``norm`` the model's final norm, ``head`` the
#: ``lm_head`` weight ``(vocab, d_model)``.
EmergenceReadout = Callable[[torch.Tensor, Callable, torch.Tensor, Sequence[int]], torch.Tensor]


def _normed(hidden: torch.Tensor, norm: Callable) -> torch.Tensor:
    return norm(hidden).float()


def paper_emergence(hidden, norm, head, letter_ids) -> torch.Tensor:
    """The paper's readout (``gen_prob_analysis.py`` without ``--layer_norm``): ``hidden · lm_headᵀ``
    with no final norm, except the last layer's output, which the model's ``hidden_states`` tuple
    holds after the final norm; softmax over the whole vocabulary."""
    rows = hidden.float().clone()
    rows[-1] = _normed(hidden[-1:], norm)[0]
    return torch.softmax(rows @ head.float().T, dim=-1)[:, list(letter_ids)]


def logit_lens_emergence(hidden, norm, head, letter_ids) -> torch.Tensor:
    """The logit lens: final norm and ``lm_head`` at every layer; softmax over the whole vocabulary."""
    return torch.softmax(_normed(hidden, norm) @ head.float().T, dim=-1)[:, list(letter_ids)]


def options_emergence(hidden, norm, head, letter_ids) -> torch.Tensor:
    """The logit lens renormalised over the option letters (each row sums to 1)."""
    return torch.softmax((_normed(hidden, norm) @ head.float().T)[:, list(letter_ids)], dim=-1)


#: Named emergence readouts; ``"paper"`` is the default wherever a number is set beside the paper's.
EMERGENCE_READOUTS: dict[str, EmergenceReadout] = {
    "paper": paper_emergence,
    "logit_lens": logit_lens_emergence,
    "options": options_emergence,
}
PAPER_EMERGENCE = "paper"


def register_emergence_readout(name: str, readout: EmergenceReadout) -> None:
    """Add a named emergence readout (the extension point for, e.g., a tuned lens: a function of
    the same signature that closes over its translators)."""
    if name in EMERGENCE_READOUTS and EMERGENCE_READOUTS[name] is not readout:
        raise ValueError(f"an emergence readout named {name!r} already exists")
    EMERGENCE_READOUTS[name] = readout


def emergence_readout(name: str) -> EmergenceReadout:
    """The emergence readout called ``name`` (a ``ValueError`` lists the known ones)."""
    try:
        return EMERGENCE_READOUTS[name]
    except KeyError:
        raise ValueError(f"unknown emergence readout {name!r}: choose one of {sorted(EMERGENCE_READOUTS)}") from None
