"""The one 'learned task' rule and the bootstrap intervals behind every headline number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowkit.analysis.learned import ABOVE_CHANCE, ABOVE_CONTROL, chance, learned_table, learned_tasks
from flowkit.analysis.stats import bootstrap_ci, mean_with_ci


def test_chance_is_one_over_the_options_of_each_bench_task():
    assert chance("moving_direction") == 0.25 and chance("scene_transition") == 0.5
    assert chance("object_shuffle") == pytest.approx(1 / 3)
    assert chance("my_task", options=5) == 0.2
    with pytest.raises(KeyError, match="options="):
        chance("my_task")


def test_a_task_is_learned_only_above_chance_and_above_the_control():
    model = {"scene_transition": 0.95, "moving_direction": 0.40, "action_antonym": 0.90, "object_count": 0.46}
    control = {"scene_transition": 0.90, "moving_direction": 0.20, "action_antonym": 0.50, "object_count": 0.25}
    table = learned_table(model, control)
    # scene: far above chance but the single-frame control answers it too (needs no time)
    assert not table.loc["scene_transition", "learned"]
    # moving direction: 15 points above chance (< 20)
    assert not table.loc["moving_direction", "learned"]
    assert table.loc["action_antonym", "learned"] and table.loc["object_count", "learned"]
    assert learned_tasks(model, control) == ["action_antonym", "object_count"]
    # without a control only the chance margin applies
    assert learned_tasks(model) == ["action_antonym", "object_count", "scene_transition"]
    assert ABOVE_CHANCE == 0.20 and ABOVE_CONTROL == 0.15


def test_per_question_tables_give_accuracy_and_chance_from_their_option_counts():
    rows = pd.DataFrame({"task": ["t"] * 10, "correct": [True] * 7 + [False] * 3, "options": [5] * 10})
    table = learned_table(rows)
    assert table.loc["t", "accuracy"] == pytest.approx(0.7) and table.loc["t", "chance"] == pytest.approx(0.2)
    assert learned_tasks(rows) == ["t"]


def test_bootstrap_interval_brackets_the_mean_narrows_with_more_questions_and_repeats():
    rng = np.random.default_rng(1)
    few, many = rng.normal(-20, 10, 8), rng.normal(-20, 10, 200)
    lo, hi = bootstrap_ci(few)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci(few) == (lo, hi)  # fixed seed: same interval every time
    assert bootstrap_ci([3.0]) == (3.0, 3.0)
    assert all(np.isnan(bootstrap_ci([])))
    frame = pd.DataFrame({"center": [0, 0, 0, 1, 1, 1], "pct": [-1.0, -2.0, -3.0, 0.0, 0.0, np.nan]})
    table = mean_with_ci(frame, "center", "pct").set_index("center")
    assert table.loc[0, "pct"] == -2.0 and table.loc[0, "lo"] <= -2.0 <= table.loc[0, "hi"]
    assert table.loc[1, "n"] == 2 and table.loc[1, "lo"] == table.loc[1, "hi"] == 0.0


def test_accuracy_by_is_the_share_correct_per_group():
    from flowkit.analysis.stats import accuracy_by

    table = pd.DataFrame({"task": ["a", "a", "b", "b", "b"], "correct": [True, False, True, True, False]})
    assert accuracy_by(table) == {"a": 0.5, "b": 2 / 3}
    assert all(type(v) is float for v in accuracy_by(table).values())


def test_first_per_task_takes_the_first_n_of_each_task_in_task_order():
    from types import SimpleNamespace

    from flowkit.data import first_per_task

    samples = [SimpleNamespace(task=t, id=f"{t}/{i}") for i in range(3) for t in ("b", "a")]
    assert [s.id for s in first_per_task(samples, 2)] == ["a/0", "a/1", "b/0", "b/1"]
    assert [s.id for s in first_per_task(samples, None, tasks=["b"])] == ["b/0", "b/1", "b/2"]
    assert [s.id for s in first_per_task(samples, lambda t: 1 if t == "a" else 2, keep=lambda s: s.id != "b/0")] == [
        "a/0",
        "b/1",
        "b/2",
    ]


def test_a_flat_stretch_is_a_tie():
    from flowkit.analysis.stats import tied_with_minimum

    values = {0: -2.0, 1: -15.0, 2: -19.5, 3: -17.0, 4: -3.0}
    intervals = {0: (-4, 0), 1: (-22, -8), 2: (-27, -12), 3: (-25, -9), 4: (-6, 0)}
    assert tied_with_minimum(values, intervals) == [1, 2, 3]
    assert tied_with_minimum(values, {k: (v - 1, v + 1) for k, v in values.items()}) == [2]  # a clear minimum
    assert tied_with_minimum(values, None) == [2] and tied_with_minimum({}, None) == []


def test_intervals_over_questions_count_a_question_once_whatever_its_seeds():
    import pandas as pd

    from flowkit.analysis.stats import bootstrap_ci, intervals_by

    # 20 questions; under the random mask each is answered under 5 seeds (right under 3 of them for even questions)
    rows = [{"condition": "full", "sample": q, "correct": q % 2 == 0} for q in range(20)]
    rows += [
        {"condition": "random", "sample": q, "seed": s, "correct": q % 2 == 0 and s < 3}
        for q in range(20)
        for s in range(5)
    ]
    table = pd.DataFrame(rows)
    by_rows, by_question = intervals_by(table, "condition"), intervals_by(table, "condition", unit="sample")
    per_question = table[table["condition"] == "random"].groupby("sample")["correct"].mean()
    assert by_question["random"] == list(bootstrap_ci(per_question.astype(float)))
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(by_rows["random"]) < width(by_question["random"])  # 100 rows looked like 100 questions
    assert by_question["full"] == by_rows["full"]  # one row per question: the same interval
