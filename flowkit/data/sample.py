"""The record every loader and generator returns, and the package's error type."""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from flowkit.errors import FlowkitError

#: option letters, in order: the first option is A (one constant for the whole kit)
OPTION_LETTERS = tuple(string.ascii_uppercase)


class QuestionSetError(FlowkitError, ValueError):
    """A question set on disk (or a request for one) is unusable.

    The message always names the offending file or argument, says what is
    wrong with it and what to do about it.
    """


class ShortClipWarning(UserWarning):
    """A clip has fewer frames than requested; frames were repeated to fill up."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One multiple-choice video question.

    ``frames`` is a ``(T, H, W, 3)`` ``uint8`` RGB array.  ``answer`` is the
    option letter (``"A"``, ``"B"`` ...) of ``answer_text`` in ``candidates``.
    ``video_path`` is the clip the frames were decoded from, or ``""`` for a
    sample generated in memory.  Samples compare by identity (``eq=False``)
    because their frames are arrays; compare frames with ``np.array_equal``.
    """

    id: str
    task: str
    frames: np.ndarray
    question: str
    candidates: tuple[str, ...]
    answer: str
    answer_text: str
    video_path: str = ""

    def __post_init__(self) -> None:
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise QuestionSetError(
                f"sample {self.id}: frames must be a uint8 array of shape (T, H, W, 3), "
                f"got {self.frames.dtype} {self.frames.shape}"
            )
        if self.answer_text not in self.candidates:
            raise QuestionSetError(
                f"sample {self.id}: answer {self.answer_text!r} is not among the candidates {list(self.candidates)}"
            )
        expected_letter = OPTION_LETTERS[self.candidates.index(self.answer_text)]
        if self.answer != expected_letter:
            raise QuestionSetError(
                f"sample {self.id}: answer letter {self.answer!r} does not match "
                f"{self.answer_text!r}, which is option {expected_letter}"
            )

    @property
    def letters(self) -> tuple[str, ...]:
        """The option letters, ``("A", "B", ...)``, one per candidate."""
        return OPTION_LETTERS[: len(self.candidates)]

    @property
    def answer_index(self) -> int:
        """The position of the correct candidate (0 for ``"A"``)."""
        return self.letters.index(self.answer)


def first_per_task(samples, n, tasks=None, keep=None) -> list:
    """The first ``n`` questions of each task, tasks in order (``tasks``, default: sorted).

    ``n`` is a number, ``None`` (all) or a function of the task (a different count per task);
    ``keep(sample)`` picks which questions count (e.g. the correctly answered ones).
    """
    samples = list(samples)
    tasks = sorted({s.task for s in samples}) if tasks is None else list(tasks)
    chosen = []
    for task in tasks:
        of_task = [s for s in samples if s.task == task and (keep is None or keep(s))]
        count = n(task) if callable(n) else n
        chosen.extend(of_task if count is None else of_task[:count])
    return chosen
