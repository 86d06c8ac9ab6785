"""Which tasks a model has *learned*: the one rule the kit's findings, chapters and widgets use.

A task counts as **learned** when the model's accuracy on it is

- at least :data:`ABOVE_CHANCE` (20 points) above chance (one over the number of options), and
- at least :data:`ABOVE_CONTROL` (15 points) above the image-only control's accuracy, when a
  control was measured (the control sees one frame at a time through the same language model,
  so a task it answers needs no time).

Averaging knockout curves over tasks a model answers at chance averages noise: the kit's headline
numbers use learned tasks only, and say so.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from flowkit.data.synthetic import NUM_OPTIONS
from flowkit.analysis.stats import accuracy_by

#: points above chance a task's accuracy needs
ABOVE_CHANCE = 0.20
#: points above the image-only control's accuracy a task's accuracy needs
ABOVE_CONTROL = 0.15
RULE = (
    f"learned = accuracy >= chance + {ABOVE_CHANCE * 100:.0f} points and >= the image-only control's "
    f"+ {ABOVE_CONTROL * 100:.0f} points"
)


def chance(task: str, options: int | None = None) -> float:
    """Accuracy of guessing: one over the number of options (the question set's count for its own tasks)."""
    if options is None:
        if task not in NUM_OPTIONS:
            raise KeyError(
                f"task {task!r} is not one of the question set's ({', '.join(NUM_OPTIONS)}); "
                "pass options= (how many answer options its questions have)"
            )
        options = NUM_OPTIONS[task]
    if options < 2:
        raise ValueError(f"a question needs at least 2 options, got {options}")
    return 1.0 / options


def _per_task(accuracy) -> dict[str, float]:
    """A mapping task -> accuracy, or a per-question table with ``task`` and ``correct`` columns."""
    if isinstance(accuracy, pd.DataFrame):
        return accuracy_by(accuracy, "task")
    return {task: float(value) for task, value in dict(accuracy).items()}


def learned_table(accuracy, control=None, options: Mapping[str, int] | None = None) -> pd.DataFrame:
    """One row per task: accuracy, chance, control accuracy, the margins and whether it is learned.

    ``accuracy`` and ``control`` are mappings task -> accuracy, or per-question tables with
    ``task`` and ``correct`` columns (as :func:`flowkit.analysis.experiments.answer_table` returns)."""
    model = _per_task(accuracy)
    ctrl = _per_task(control) if control is not None else {}
    # a per-question table knows each question's option count: chance is the mean of 1 / options
    counted = (
        accuracy.assign(_chance=1.0 / accuracy["options"]).groupby("task")["_chance"].mean().to_dict()
        if isinstance(accuracy, pd.DataFrame) and "options" in accuracy
        else {}
    )
    rows = []
    for task in sorted(model):
        base = counted[task] if task in counted else chance(task, (options or {}).get(task))
        c = ctrl.get(task)
        over_chance = model[task] - base
        over_control = None if c is None else model[task] - c
        learned = over_chance >= ABOVE_CHANCE - 1e-9 and (over_control is None or over_control >= ABOVE_CONTROL - 1e-9)
        rows.append(
            {
                "task": task,
                "accuracy": model[task],
                "chance": base,
                "control": c,
                "over_chance": over_chance,
                "over_control": over_control,
                "learned": learned,
            }
        )
    return pd.DataFrame(rows).set_index("task")


def learned_tasks(accuracy, control=None, options: Mapping[str, int] | None = None) -> list[str]:
    """The tasks that pass :data:`RULE`, sorted."""
    table = learned_table(accuracy, control, options)
    return sorted(table.index[table["learned"]])
