"""The named readouts (flowkit.prompts.readout): the paper's rules pinned beside flowkit's own.

Prediction rules on synthetic logits and on a tiny model whose top token is sometimes not a
letter; emergence with and without the final norm; the lens's layer numbering; the word bags;
the random control's overflow option.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from flowkit.analysis import experiments
from flowkit.analysis.lens import (
    answer_by_layer,
    layer_regions,
    lens_layers,
    paper_lens_layer,
    temporal_share_by_region,
)
from flowkit.analysis.pathways import paper_random_block_masks, paper_random_pool
from flowkit.analysis.sweep import correct_columns, question_rows, summarize, window_specs
from flowkit.data.vocab import (
    PAPER_ACTION_SEQUENCE_SPATIAL,
    PAPER_ACTION_SEQUENCE_TEMPORAL,
    SPATIAL_WORDS,
    TEMPORAL_WORDS,
    WORD_BAGS,
)
from flowkit.errors import KnockoutError
from flowkit.intervention.spec import KnockoutSpec
from flowkit.prompts.readout import (
    EMERGENCE_READOUTS,
    accuracy,
    answer_distribution,
    emergence_readout,
    non_letter_share,
    register_emergence_readout,
)

LETTERS = [3, 4]  # token ids of "A" and "B" in a 10-token vocabulary


def _logits(values: dict[int, float]) -> torch.Tensor:
    logits = torch.zeros(10)
    for token, value in values.items():
        logits[token] = value
    return logits


# three questions, true option A: a letter wins (A); a non-letter (token 7) wins with A the best
# letter; a non-letter wins with B the best letter
CASES = [_logits({3: 5.0, 4: 1.0}), _logits({7: 6.0, 3: 5.0, 4: 1.0}), _logits({7: 6.0, 3: 1.0, 4: 5.0})]


def test_the_two_prediction_rules_on_synthetic_logits():
    dists = [answer_distribution(logits, LETTERS, true_option=0) for logits in CASES]
    assert [d.top_token_id for d in dists] == [3, 7, 7]
    assert [d.top_option for d in dists] == [0, None, None]
    assert [d.top_is_letter for d in dists] == [True, False, False]
    assert [d.predicted for d in dists] == [0, 0, 1]  # the option-letter rule's answer
    assert [d.prediction("vocabulary") for d in dists] == [0, None, None]
    assert [d.is_correct("options") for d in dists] == [True, True, False]
    assert [d.is_correct("vocabulary") for d in dists] == [True, False, False]
    assert [d.correct for d in dists] == [True, False, False]  # the paper's rule by default
    assert accuracy(dists) == pytest.approx(1 / 3)
    assert accuracy(dists, prediction="options") == pytest.approx(2 / 3)
    assert non_letter_share(dists) == pytest.approx(2 / 3)
    assert "top token not a letter" in str(dists[1])
    with pytest.raises(ValueError, match="unknown prediction rule"):
        accuracy(dists, prediction="letters")


def test_a_letter_of_another_prompt_is_not_a_letter():
    # token 5 is "C": a letter of a 4-way question, not of this 2-way one
    dist = answer_distribution(_logits({5: 9.0, 3: 5.0}), LETTERS, true_option=0)
    assert dist.top_token_id == 5 and dist.top_option is None and dist.correct is False


def test_a_distribution_without_its_top_token_says_so():
    from flowkit.prompts.readout import AnswerDistribution

    dist = AnswerDistribution((0.1, 0.3), (0.25, 0.75), 1, true_option=1)
    assert dist.correct is True  # only the options rule can be read
    with pytest.raises(ValueError, match="prediction='options'"):
        dist.is_correct("vocabulary")


def test_sweep_rows_and_summary_follow_the_rule():
    class _Sample:
        def __init__(self, sid):
            self.id, self.task, self.answer = sid, "t", "A"

    specs = window_specs(["video->last"], [0], size=1)
    jsons = [spec.to_json() for _, _, spec in specs]
    clean_json = KnockoutSpec().to_json()
    rows = []
    for sid, logits in enumerate(CASES):
        clean = answer_distribution(logits, LETTERS, 0).to_dict()
        after = answer_distribution(logits * 0.5, LETTERS, 0).to_dict()
        rows += question_rows(_Sample(sid), specs, jsons, {clean_json: clean, jsons[0]: after}, 4)
    df = pd.DataFrame(rows)
    assert df["correct_base"].tolist() == [True, False, False]
    assert df["letter_base"].tolist() == [True, False, False]
    assert df["correct_base_options"].tolist() == [True, True, False]
    assert correct_columns("options") == ("correct_base_options", "correct_after_options")
    paper = summarize(df).iloc[0]
    options = summarize(df, prediction="options").iloc[0]
    assert paper["n"] == 1 and options["n"] == 2  # the non-letter question is left out of the paper's average
    assert paper["pct_change"] == pytest.approx(df["pct_change"].iloc[0])
    assert options["pct_change"] == pytest.approx(df["pct_change"].iloc[:2].mean())
    assert paper["accuracy_before"] == pytest.approx(1 / 3) and options["accuracy_before"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def letter_sometimes(toy_checkpoint):
    """The tiny model with "B"'s output row set just above (x 1.001) the row of the token that most often wins,
    so that on some questions the top token is a letter and on others it is not."""
    from flowkit import load_videollm
    from flowkit.data import generate

    vllm = load_videollm(toy_checkpoint, quant="fp32")
    samples = generate("action_antonym", 4, seed=3, num_frames=8, size=32) + generate(
        "moving_direction", 4, seed=3, num_frames=8, size=32
    )
    tops = [vllm.answer(vllm.prepare_sample(s)).top_token_id for s in samples]
    winner = max(set(tops), key=tops.count)
    letter_b = vllm.prepare_sample(samples[0]).letter_ids[1]
    head = vllm.model.get_output_embeddings().weight
    with torch.no_grad():
        head[letter_b] = head[winner] * 1.001
    return vllm, samples


def test_a_tiny_model_whose_top_token_is_sometimes_not_a_letter(letter_sometimes):
    vllm, samples = letter_sometimes
    table = experiments.answer_table(vllm, samples, progress=False)
    assert 0 < table["top_is_letter"].mean() < 1  # sometimes a letter wins, sometimes not
    assert (table["correct"] <= table["correct_options"]).all()  # the paper's rule is never kinder
    assert table["correct"].sum() < table["correct_options"].sum()  # ... and here stricter
    assert not table.loc[~table["top_is_letter"], "correct"].any()
    dists = [vllm.answer(vllm.prepare_sample(s)) for s in samples]
    assert accuracy(dists) == pytest.approx(table["correct"].mean())
    assert accuracy(dists, "options") == pytest.approx(table["correct_options"].mean())
    assert non_letter_share(dists) == pytest.approx(1 - table["top_is_letter"].mean())


# ------------------------------------------------------------------ emergence


def test_emergence_readouts_on_synthetic_states():
    torch.manual_seed(0)
    hidden, head = torch.randn(4, 6) * 3, torch.randn(10, 6)

    def norm(h):
        return h / h.norm(dim=-1, keepdim=True)

    paper = emergence_readout("paper")(hidden, norm, head, LETTERS)
    lens = emergence_readout("logit_lens")(hidden, norm, head, LETTERS)
    options = emergence_readout("options")(hidden, norm, head, LETTERS)
    raw = torch.softmax(hidden @ head.T, -1)[:, LETTERS]
    normed = torch.softmax(norm(hidden) @ head.T, -1)[:, LETTERS]
    assert torch.allclose(paper[:-1], raw[:-1]) and torch.allclose(paper[-1], normed[-1])  # norm only at the last
    assert torch.allclose(lens, normed)
    assert not torch.allclose(paper[:-1], lens[:-1])
    assert torch.allclose(options.sum(-1), torch.ones(4))
    assert torch.allclose(options, torch.softmax((norm(hidden) @ head.T)[:, LETTERS], -1))
    with pytest.raises(ValueError, match="unknown emergence readout"):
        emergence_readout("tuned")


def test_a_readout_is_registered_by_name():
    def doubled(hidden, norm, head, letter_ids):
        return EMERGENCE_READOUTS["logit_lens"](hidden * 2, norm, head, letter_ids)

    register_emergence_readout("test_doubled", doubled)
    try:
        assert emergence_readout("test_doubled") is doubled
        with pytest.raises(ValueError, match="already exists"):
            register_emergence_readout("test_doubled", lambda *a: None)
    finally:
        del EMERGENCE_READOUTS["test_doubled"]


def test_emergence_on_the_tiny_model(toy_fp32, prepared_fp32):
    paper = answer_by_layer(toy_fp32, prepared_fp32)
    lens = answer_by_layer(toy_fp32, prepared_fp32, readout="logit_lens")
    last = toy_fp32.num_layers - 1
    dist = toy_fp32.answer(prepared_fp32)
    for table in (paper, lens):  # both end at the model's own answer
        assert table[table["layer"] == last]["prob"].tolist() == pytest.approx(list(dist.probs), rel=1e-4)
    early = paper["layer"] < last
    assert not np.allclose(paper[early]["prob"], lens[early]["prob"])  # no final norm before the last layer
    options = answer_by_layer(toy_fp32, prepared_fp32, readout="options")
    assert options.groupby("layer")["prob"].sum().tolist() == pytest.approx([1.0] * toy_fp32.num_layers)


# ------------------------------------------------------------------ the lens's layers


def test_the_paper_lens_layer_mapping():
    L = 28
    assert paper_lens_layer(0, L) == (-1, False)  # the embeddings
    assert paper_lens_layer(5, L) == (4, False)  # the input of layer 5 = the output of layer 4
    assert paper_lens_layer(L - 2, L) == (L - 3, False)
    assert paper_lens_layer(L - 1, L) == (L - 1, True)  # the final norm's output
    read = {resid_post for _, resid_post, _ in lens_layers(L, "paper")}
    assert read == set(range(-1, L)) - {L - 2}  # resid_post(L - 2) has no paper counterpart
    assert [row[0] for row in lens_layers(L, "resid_post")] == list(range(-1, L))
    with pytest.raises(ValueError):
        paper_lens_layer(L, L)


def test_layer_regions_and_the_temporal_share_by_region():
    import pandas as pd

    L = 30
    regions = list(layer_regions(range(L), L))
    assert regions[0] == "input (embeddings, layer 0)" and regions[L - 1] == "last (29, after the final norm)"
    assert regions[1] == regions[10] == "early: layers 1-10" and regions[11] == "middle: layers 11-20"
    assert regions[21] == regions[28] == "late: layers 21-28"
    # two questions, one lens: question a reads 0.2 everywhere, b 0.6; the region's mean is 0.4, its spread 0.2-0.6
    shares = pd.DataFrame(
        [
            {"sample": s, "layer": l, "kind": "embedding", "temporal_share": v}
            for s, v in (("a", 0.2), ("b", 0.6))
            for l in range(L)
        ]
    )
    table = temporal_share_by_region(shares, L)
    row = table.loc[("early: layers 1-10", "embedding")]
    assert (
        row["mean"] == pytest.approx(0.4) and row["lowest"] == 0.2 and row["highest"] == 0.6 and row["questions"] == 2
    )
    assert list(table.index.get_level_values(0).unique()) == list(dict.fromkeys(regions))
    for small in (2, 6):
        with pytest.raises(ValueError, match="at least 7 layers"):
            layer_regions(range(small), small)
    assert len(set(layer_regions(range(7), 7))) == 5  # the smallest depth with every region


def test_video_token_lens_in_both_numberings(toy_fp32):
    from flowkit.data import generate

    sample = generate("action_antonym", 1, seed=3, num_frames=8, size=32)
    L = toy_fp32.num_layers
    paper = experiments.video_token_lens(toy_fp32, sample, k=5, progress=False).set_index("layer")
    ours = experiments.video_token_lens(toy_fp32, sample, k=5, progress=False, layers="resid_post").set_index("layer")
    assert list(paper.index) == list(range(L)) and list(ours.index) == list(range(-1, L))
    for i in range(L - 1):
        assert paper.loc[i, "resid_post"] == i - 1
        assert paper.loc[i, "temporal_share"] == ours.loc[i - 1, "temporal_share"]
    assert paper.loc[L - 1, "resid_post"] == L - 1


# ------------------------------------------------------------------ word bags


def test_word_bags_are_the_papers_lists_and_the_kits():
    assert WORD_BAGS["kit"] == (SPATIAL_WORDS, TEMPORAL_WORDS)
    assert (len(SPATIAL_WORDS), len(TEMPORAL_WORDS)) == (27, 23)
    spatial, temporal = WORD_BAGS["paper_action_sequence"]
    assert (spatial, temporal) == (PAPER_ACTION_SEQUENCE_SPATIAL, PAPER_ACTION_SEQUENCE_TEMPORAL)
    assert len(spatial) == 22 and spatial.count("glass") == 2 and len(set(spatial)) == 21
    assert len(temporal) == 14 and len(set(temporal)) == 14
    assert {"sandwich", "laptop", "person"} <= set(spatial) and {"tidy", "throw", "up", "on"} <= set(temporal)
    assert not set(spatial) & set(temporal)


def test_the_paper_bag_matches_first_tokens(toy_fp32):
    from flowkit.analysis.lens import word_bag

    ids, temporal = word_bag(toy_fp32, "paper_action_sequence")
    first = {
        toy_fp32.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in PAPER_ACTION_SEQUENCE_TEMPORAL
    }
    assert first <= set(ids[temporal].tolist())
    with pytest.raises(KeyError, match="unknown word bag"):
        word_bag(toy_fp32, "nope")


# ------------------------------------------------------------------ random control overflow


def test_random_control_overflow_refuses_or_cuts_the_whole_pool():
    with pytest.raises(KnockoutError, match="cut_pool"):
        paper_random_block_masks(20, 15, 2, 0.58, seed=0)
    masks = paper_random_block_masks(20, 15, 2, 0.58, seed=0, on_overflow="cut_pool")
    pool = paper_random_pool(20, 15)
    for mask in masks.values():
        assert int(mask.sum()) == len(pool) == 15
        assert torch.equal(mask.flatten().nonzero().flatten().sort().values, pool.sort().values)
    with pytest.raises(KnockoutError, match="on_overflow"):
        paper_random_block_masks(20, 15, 2, 0.58, seed=0, on_overflow="wrap")


def test_the_fidelity_report_shows_the_non_letter_share_and_the_other_rule():
    import json

    from flowkit.course.fidelity import _non_letter_share, format_report
    from flowkit.locations import data_path

    table = pd.DataFrame({"task": ["a", "a", "b"], "top_is_letter": [True, False, True]})
    assert _non_letter_share(table) == {"a": 0.5, "b": 0.0}
    report = json.loads(data_path("results", "fidelity.json").read_text())
    task = sorted(report["accuracy"])[0]
    report["non_letter_share"] = {task: 0.25}
    report["accuracy_options"] = {t: a + (0.1 if t == task else 0.0) for t, a in report["accuracy"].items()}
    lines = format_report(report).splitlines()
    assert "non-letter" in lines[2] and "options rule" in lines[2]
    row = next(line for line in lines if line.startswith(task))
    assert "25.0%" in row and f"{100 * report['accuracy_options'][task]:.1f}%" in row
    other = next(
        line for line in lines[3:] if line.split() and line.split()[0] in report["accuracy"] and line.split()[0] != task
    )
    assert len(other.split()) == 3  # accuracy and control only: the rules agree, no non-letter share recorded


# ------------------------------------------------------------------ VideoLLaMA3's spans as the paper counts them


def _video_llama3_layout(merged: bool):
    """Token texts of a VideoLLaMA3 prompt (two frames of 4 tokens) and the kit's spans of it.

    ``merged``: the question's "?" and the newline after it are one token, as a real Qwen2
    tokenizer writes them (its pre-tokenizer joins punctuation with following newlines).
    """
    from flowkit.prompts.spans import Spans

    texts = ["<|im_start|>", "user", "\n"]
    video_start = len(texts)
    frames = []
    for i in range(2):
        texts += ([","] if i else []) + ["Time", " ", str(i), ".", "0", "s", ":"]
        frames.append((len(texts), len(texts) + 4))
        texts += ["<|video_pad|>"] * 4
    video_end = len(texts)
    texts += ["\n"]
    question_start = len(texts)
    texts += ["Which", " way", "?\n"] if merged else ["Which", " way", "?", "\n"]
    question_end = question_start + 3
    texts += ["Options", ":", "\n"]
    options = []
    for letter, word in (("A", " left"), ("B", " right")):
        options.append((len(texts), len(texts) + 4))
        texts += ["(", letter, ")", word, "\n"]
    texts += ["Answer", " with", "<|im_end|>", "\n", "Best", " option", ":("]
    kit = Spans(
        seq_len=len(texts),
        frame_spans=tuple(frames),
        question_text=(question_start, question_end),
        option_spans=tuple(options),
        last=len(texts) - 1,
        video_span=(video_start, video_end),
    )
    return texts, kit


@pytest.mark.parametrize("merged", [False, True])
def test_video_llama3_paper_spans_on_a_built_layout(merged):
    from flowkit.families.video_llama3 import paper_spans

    texts, kit = _video_llama3_layout(merged)
    paper = paper_spans(kit, texts)
    text = lambda span: "".join(texts[span[0] : span[1]])  # noqa: E731
    # each frame's leading timestamp, and the comma before it, belong to that frame: frames tile the video
    assert [text(f) for f in paper.frame_spans] == [
        "Time 0.0s:" + "<|video_pad|>" * 4,
        ",Time 1.0s:" + "<|video_pad|>" * 4,
    ]
    assert paper.video == kit.video and paper.video_span is None
    # the newline after the question sentence and after each option belongs to the span
    assert text(paper.question_text) == "Which way?\n"
    assert [text(o) for o in paper.option_spans] == ["(A) left\n", "(B) right\n"]
    assert paper.question == (kit.question_text[0], paper.option_spans[-1][1])
    assert text(paper.question).endswith("(B) right\n")
    if merged:  # the newline is already inside the question's last token: nothing added
        assert paper.question_text == kit.question_text
    else:
        assert paper.question_text == (kit.question_text[0], kit.question_text[1] + 1)
    # the kit's own convention is unchanged: separators in no frame, newlines outside
    assert [text(f) for f in kit.frame_spans] == ["<|video_pad|>" * 4] * 2
    assert text(kit.option_spans[0]) == "(A) left"


def test_the_knockout_grid_view_says_whether_a_letter_won():
    from flowkit.views.view_models import answer_view

    letter, other = (answer_distribution(logits, LETTERS, true_option=0) for logits in CASES[:2])
    view = answer_view(letter, other, KnockoutSpec())
    assert (view["before"]["top_is_letter"], view["before"]["correct"]) == (True, True)
    assert (view["after"]["top_is_letter"], view["after"]["correct"]) == (False, False)
    assert view["after"]["predicted_letter"] == "A"  # the most likely letter is still shown
