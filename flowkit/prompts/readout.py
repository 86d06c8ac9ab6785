"""Reading the answer: option-letter probabilities at the last position, and the paper's metric."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import torch

from flowkit.formatting import format_prob
from flowkit.prompts.spans import OPTION_LETTERS


@dataclass(frozen=True)
class AnswerDistribution:
    """The model's answer to one multiple-choice question.

    Attributes:
        probs: p(letter) for each option, from the softmax over the *whole* vocabulary
            (what the paper's % change is computed on).
        option_probs: the same renormalised over the options only (sums to 1).
        predicted: index of the most likely option.
        true_option: index of the correct option, if known.
    """

    probs: tuple[float, ...]
    option_probs: tuple[float, ...]
    predicted: int
    true_option: int | None = None

    @property
    def letters(self) -> tuple[str, ...]:
        return OPTION_LETTERS[: len(self.probs)]

    @property
    def predicted_letter(self) -> str:
        return self.letters[self.predicted]

    @property
    def correct(self) -> bool | None:
        return None if self.true_option is None else self.predicted == self.true_option

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
        }

    def __str__(self) -> str:
        cells = [
            f"{l}: {format_prob(p)}" + ("*" if i == self.true_option else "")
            for i, (l, p) in enumerate(zip(self.letters, self.option_probs))
        ]
        return (
            f"predicted {self.predicted_letter}  [" + "  ".join(cells) + "]  (* = correct; renormalised over options)"
        )


def answer_distribution(
    last_logits: torch.Tensor, letter_ids: Sequence[int], true_option: int | None = None
) -> AnswerDistribution:
    """Answer distribution from next-token logits at the last position."""
    logits = last_logits.float()
    full = torch.softmax(logits, dim=-1)[list(letter_ids)]
    options = torch.softmax(logits[list(letter_ids)], dim=-1)
    return AnswerDistribution(
        probs=tuple(full.tolist()),
        option_probs=tuple(options.tolist()),
        predicted=int(torch.argmax(logits[list(letter_ids)])),
        true_option=true_option,
    )


def percent_change(p_base: float, p_new: float) -> float:
    """The paper's metric: ``100 * (p_new - p_base) / p_base``."""
    if p_base <= 0:
        raise ValueError("p_base must be positive to compute a relative change")
    return 100.0 * (p_new - p_base) / p_base


def accuracy(distributions: Sequence[AnswerDistribution]) -> float:
    """Share of questions answered correctly (every distribution must know its true option)."""
    if not distributions:
        raise ValueError("accuracy of no questions is undefined")
    if any(d.true_option is None for d in distributions):
        raise ValueError("accuracy needs the true option of every question")
    return sum(bool(d.correct) for d in distributions) / len(distributions)
