"""Any mask through the session: pathway masks, random controls and accuracy equal full forwards.

:meth:`Session.last_logits` evaluates raw per-layer block masks with one clean run
and batched replays; :func:`flowkit.analysis.experiments.effective_pathways` uses it. Both must equal
one full forward per mask to <= 1e-5 in p (fp32 and nf4), and the pathways table must keep
its schema and values. The interactive view's resumed replays are exact too.
"""

from __future__ import annotations

import pytest
import torch

from flowkit import KnockoutSpec, LayerSet, LayerWindow
from flowkit.analysis import experiments
from flowkit.errors import KnockoutError
from flowkit.views.view_models import AnswerExplorer
from flowkit.intervention.attention import apply_block_masks
from flowkit.intervention.masks import block_masks
from flowkit.analysis.pathways import (
    PathwayWindows,
    layer_matched_random_block_masks,
    paper_random_block_masks,
    pathway_masks,
)

from conftest import OPTIONS, QUESTION, random_frames

WINDOWS = PathwayWindows(
    cross_frame=(0, 1),
    video_to_question=(0, 2),
    question_to_last=(2, 3),
    video_to_video_until=2,
    question_to_question_until=3,
)


def full_forward(vllm, prepared, masks):
    with torch.inference_mode(), apply_block_masks(vllm.language_model, masks):
        return vllm.model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float()


def max_dp(a, b):
    return float((torch.softmax(a, -1) - torch.softmax(b, -1)).abs().max())


@pytest.fixture(scope="module")
def samples():
    from flowkit.data import generate

    return generate("action_antonym", 2, seed=3, num_frames=8, size=32) + generate(
        "moving_direction", 1, seed=5, num_frames=8, size=32
    )


@pytest.mark.parametrize("model", ["toy_fp32", "toy_nf4"])
@pytest.mark.parametrize("row_budget", [1, 4096])
def test_masks_match_full_forwards(model, row_budget, request):
    vllm = request.getfixturevalue(model)
    prepared = vllm.prepare(random_frames(seed=21), QUESTION, OPTIONS, answer="A")
    spans, layers = prepared.spans, vllm.num_layers
    path = pathway_masks(WINDOWS, spans, layers)
    masks = [path, None, {}]
    masks += [paper_random_block_masks(spans.seq_len, spans.video[0], layers, 0.3, seed=s) for s in range(3)]
    masks += [layer_matched_random_block_masks(path, spans.seq_len, layers, seed=s) for s in range(2)]
    masks.append(block_masks(KnockoutSpec.single("question->last", LayerSet((3,))), spans, layers))
    session = vllm.session(prepared, row_budget=row_budget)
    fast = session.last_logits(masks)
    assert torch.equal(fast[1], session.clean_logits) and torch.equal(fast[2], session.clean_logits)
    worst = max(max_dp(logits, full_forward(vllm, prepared, m or {})) for m, logits in zip(masks, fast))
    assert worst <= 1e-5, worst
    # a spec and its masks give the same numbers
    spec = KnockoutSpec.single("question->last", LayerSet((3,)))
    assert torch.equal(session.last_logits([spec])[0], fast[-1])
    assert [d.predicted for d in session.answers(masks[:2])] == [
        session.answers([masks[0]])[0].predicted,
        session.clean_answer.predicted,
    ]


def test_bad_masks_are_refused_with_the_reason(toy_fp32, prepared_fp32):
    session = toy_fp32.session(prepared_fp32)
    n = prepared_fp32.seq_len
    with pytest.raises(KnockoutError, match=rf"\({n}, {n}\) bool tensor"):
        session.last_logits([{0: torch.zeros(n, n + 1, dtype=torch.bool)}])
    with pytest.raises(KnockoutError, match="bool tensor"):
        session.last_logits([{0: torch.zeros(n, n)}])
    with pytest.raises(KnockoutError, match="not a layer of this model"):
        session.last_logits([{toy_fp32.num_layers: torch.zeros(n, n, dtype=torch.bool)}])
    with pytest.raises(KnockoutError, match="no key to attend to"):
        session.last_logits([{1: torch.ones(n, n, dtype=torch.bool).tril()}])


@pytest.mark.parametrize("controls", [("paper",), ("paper", "layer_matched")])
def test_effective_pathways_session_equals_full_forwards(toy_fp32, samples, controls):
    fast, fast_counts = experiments.effective_pathways(
        toy_fp32, samples, WINDOWS, random_seeds=(0, 1, 2), random_controls=controls, progress=False
    )
    slow, slow_counts = experiments.effective_pathways(
        toy_fp32, samples, WINDOWS, random_seeds=(0, 1, 2), random_controls=controls, progress=False, replay=False
    )
    assert (
        list(fast.columns)
        == list(slow.columns)
        == ["sample", "task", "condition", "seed", "correct", "correct_options", "p_answer", "kept_fraction"]
    )
    keys = ["sample", "task", "condition", "seed", "correct", "correct_options", "kept_fraction"]
    assert fast[keys].astype(str).equals(slow[keys].astype(str))
    assert (fast["p_answer"] - slow["p_answer"]).abs().max() <= 1e-5
    assert fast_counts == slow_counts
    # `full` is the clean run itself
    full = fast[fast["condition"] == "full"].iloc[0]
    dist = toy_fp32.answer(toy_fp32.prepare_sample(samples[0]))
    assert full["p_answer"] == dist.p(samples[0].answer)


def test_effective_pathways_nf4_session_equals_full_forwards(toy_nf4, samples):
    fast, _ = experiments.effective_pathways(toy_nf4, samples[:2], WINDOWS, random_seeds=(0, 1), progress=False)
    slow, _ = experiments.effective_pathways(
        toy_nf4, samples[:2], WINDOWS, random_seeds=(0, 1), progress=False, replay=False
    )
    assert (fast["correct"] == slow["correct"]).all()
    assert (fast["p_answer"] - slow["p_answer"]).abs().max() <= 1e-5


@pytest.mark.parametrize("model", ["toy_fp32", "toy_nf4"])
def test_clicks_resume_from_earlier_replays_exactly(model, request):
    """The knockout grid's clicks: each spec extends or trims the last one; answers equal full forwards."""
    vllm = request.getfixturevalue(model)
    prepared = vllm.prepare(random_frames(seed=23), QUESTION, OPTIONS, answer="B")
    explorer = AnswerExplorer(vllm, prepared)
    clicks = [
        KnockoutSpec.single("video->question", LayerSet((1,))),
        KnockoutSpec.single("video->question", LayerSet((1, 2))),  # one more cell: resumes at layer 2
        KnockoutSpec.single("video->question", LayerSet((1, 2, 3))),
        KnockoutSpec.single("video->question", LayerSet((1, 3))),  # a cell removed
        KnockoutSpec.single("cross_frame", LayerWindow(1, 3)).plus(
            KnockoutSpec.single("video->question", LayerSet((1, 3)))
        ),
        KnockoutSpec.single("question->last", LayerSet((2,))),
        KnockoutSpec.single("question->last", LayerSet((2, 3))),
    ]
    for spec in clicks:
        dist = explorer.answer(spec)
        reference = vllm.answer(prepared, spec)
        assert max(abs(a - b) for a, b in zip(dist.probs, reference.probs)) <= 1e-5, str(spec)
    assert explorer.resumed >= 3  # the view really reused earlier replays
