"""What every chapter notebook needs: one call to start, the shipped model, the question set, clips.

>>> from flowkit.course import chapters
>>> chapters.start()                       # seeds, offline charts, quiet progress bars
>>> vllm = chapters.model()                # flowkit-smol-video in NF4 (assembled once, then cached)
>>> clip = chapters.sample("scene_transition/0003")
>>> chapters.show_clip(clip)
"""

from __future__ import annotations

import functools
import io
import os
import random

import numpy as np
import pandas as pd

from flowkit.data.sample import first_per_task
from flowkit.errors import FlowkitError
from flowkit.model.named_models import KIT_CONTROL, KIT_MODEL
from flowkit.views.thumbnails import clip_strip
from flowkit.prompts.spans import OPTION_LETTERS

MODEL, CONTROL = KIT_MODEL, KIT_CONTROL


def start(seed: int = 0) -> None:
    """Fix seeds, stay offline, draw charts as PNGs, show tables' texts whole and keep loading bars out of the outputs."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pd.set_option(
        "display.max_colwidth", None
    )  # a table's sentences (the paper comparison) are not cut at 50 characters
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from flowkit.views.plots import enable_offline_charts

    enable_offline_charts()


@functools.lru_cache(maxsize=4)
def model(name: str = MODEL, quant: str = "nf4"):
    """Load (once per kernel) a VideoLLM; by default the kit's shipped model in 4-bit NF4."""
    from flowkit.model.videollm import load_videollm

    return load_videollm(name, quant=quant)


def questions() -> tuple:
    """The shipped evaluation split (360 questions, 8 frames each), decoded once per kernel."""
    from flowkit.data import shipped_questions

    return shipped_questions()


def sample(sample_id: str):
    """One question by id, e.g. ``"scene_transition/0003"``."""
    for s in questions():
        if s.id == sample_id:
            return s
    tasks = sorted({s.id.split("/")[0] for s in questions()})
    raise FlowkitError(
        f"no question {sample_id!r}; ids look like 'TASK/NNNN' with TASK one of {', '.join(tasks)} and NNNN from 0000."
    )


def samples_of(task: str, n: int | None = None) -> list:
    """The first ``n`` (default all) questions of one task."""
    chosen = first_per_task(questions(), n, tasks=[task])
    if not chosen:
        tasks = sorted({s.task for s in questions()})
        raise FlowkitError(f"no task {task!r}; the tasks are {', '.join(tasks)}.")
    return chosen


def learned_table() -> pd.DataFrame:
    """Per task: the stored accuracy, chance, the control's accuracy and whether the task is learned
    (the one rule of :mod:`flowkit.analysis.learned`), from the precomputed tables in ``data/results``.

    ``lo`` / ``hi`` are the accuracy's 95 % bootstrap interval over the task's questions: the fidelity
    report's ``accuracy_ci``, or computed here from the per-question table where the report lacks it."""
    from flowkit.analysis.learned import learned_table as table_of
    from flowkit.course.results import load_report, load_table
    from flowkit.analysis.stats import intervals_by

    accuracy = load_table("accuracy")
    control = load_table("control_accuracy")
    table = table_of(accuracy, control if len(control) else None)
    try:
        stored = load_report().get("accuracy_ci") or {}
    except FlowkitError:  # tables without their report: the intervals are computed below
        stored = {}
    intervals = {**intervals_by(accuracy, "task"), **stored}
    return table.assign(
        lo=[float(intervals[t][0]) for t in table.index], hi=[float(intervals[t][1]) for t in table.index]
    )


def learned_tasks() -> list[str]:
    """The tasks the shipped model has learned (:data:`flowkit.analysis.learned.RULE`), from the stored results."""
    table = learned_table()
    return sorted(table.index[table["learned"]])


def telling_clip(edge_group: str):
    """A question worth looking at for ``edge_group``: answered correctly, from a learned task, and the
    one whose answer moved most when ``edge_group`` was cut in the precomputed sweeps.

    It is the *most* moved question, not a typical one: show it beside its task's distribution
    (:func:`flowkit.analysis.experiments.question_troughs`, :func:`flowkit.views.plots.question_strip`)."""
    from flowkit.course.results import load_table

    sweeps = load_table("sweeps")
    learned = learned_tasks()
    rows = sweeps[(sweeps["edge_group"] == edge_group) & sweeps["correct_base"] & sweeps["task"].isin(learned)]
    if rows.empty:
        raise FlowkitError(
            f"no correctly answered question of a learned task was swept for {edge_group!r}; "
            "regenerate the results with `python -m flowkit fidelity`."
        )
    return sample(rows.groupby("sample")["pct_change"].min().idxmin())


def show_clip(clip, size: int = 96) -> None:
    """Display a question: its frames in order, the question and the options (★ = correct)."""
    from IPython.display import Image, Markdown, display

    buffer = io.BytesIO()
    clip_strip(clip.frames, size=size).save(buffer, format="PNG")
    display(Image(data=buffer.getvalue()))
    options = "  ".join(
        f"({OPTION_LETTERS[i]}) {text}" + (" ★" if text == clip.answer_text else "")
        for i, text in enumerate(clip.candidates)
    )
    display(
        Markdown(f"**{clip.id}** — frames 0 → {len(clip.frames) - 1}, left to right  \n*{clip.question}*  \n{options}")
    )


#: reading speed for a chapter's prose (technical text, with its charts), words a minute
READING_WORDS_PER_MINUTE = 150
#: minutes a student spends on one exercise (write, run the check, fix) and on one prediction
EXERCISE_MINUTES, PREDICTION_MINUTES = 8, 2


def reading_minutes(notebook) -> int:
    """A realistic time for a chapter (a path or an nbformat notebook): its prose at
    :data:`READING_WORDS_PER_MINUTE`, plus :data:`EXERCISE_MINUTES` per exercise and
    :data:`PREDICTION_MINUTES` per predict-then-reveal chart, rounded to 5 minutes."""
    import nbformat

    if not hasattr(notebook, "cells"):
        notebook = nbformat.read(str(notebook), as_version=4)
    words = sum(len(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown")
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    exercises = sum(source.count('exercise("') for source in code)
    predictions = sum(source.count("PredictReveal(") for source in code)
    minutes = words / READING_WORDS_PER_MINUTE + EXERCISE_MINUTES * exercises + PREDICTION_MINUTES * predictions
    return int(5 * round(minutes / 5))


def paper_table(rows) -> pd.DataFrame:
    """A "compare with the paper" table from ``(finding, paper's 7B models, this model, verdict, rule)`` rows."""
    return pd.DataFrame(
        list(rows), columns=["finding", "paper (7B VideoLLMs)", "this model (95 % CI)", "verdict", "rule"]
    ).set_index("finding")


def accuracy_by_task_table(rows: pd.DataFrame, conditions) -> pd.DataFrame:
    """Per task and mask, ``"accuracy [lo, hi]"`` in % (one decimal) from a per-task summary with
    ``task``, ``condition``, ``accuracy``, ``lo`` and ``hi`` (the pathway study's ``held_out_by_task``):
    each task's numbers with their interval, so that a few questions' difference is read as one."""
    missing = [c for c in conditions if c not in set(rows["condition"])]
    if missing:
        raise FlowkitError(f"no rows for {missing}; the table has {sorted(set(rows['condition']))}")
    cells = rows.assign(
        cell=[
            f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
            for a, lo, hi in zip(rows["accuracy"], rows["lo"], rows["hi"])
        ]
    )
    table = cells.pivot(index="task", columns="condition", values="cell")[list(conditions)]
    table.columns.name = "accuracy in % [95 % interval]"
    return table


__all__ = [
    "CONTROL",
    "MODEL",
    "accuracy_by_task_table",
    "learned_table",
    "learned_tasks",
    "model",
    "paper_table",
    "questions",
    "sample",
    "samples_of",
    "show_clip",
    "start",
    "telling_clip",
]
