"""Edge groups, layer windows, specs and block masks — no model needed."""

from __future__ import annotations

import itertools

import pytest
import torch

from flowkit import KnockoutError, KnockoutSpec, LayerSet, LayerWindow, block_masks, count_edges, parse_layers
from flowkit.intervention.spec import Cut
from flowkit.intervention.masks import edge_block_mask
from flowkit.intervention.edge_groups import normalize_edges
from flowkit.prompts.spans import Spans

# prefix 0-2, four frames of 3 tokens (3..14), question 15..17, newline 18, options 19-20, 21-22, 23-24, tail 25-27, last 28
# (the paper's question span: 15..24, question sentence through the last option; the tail is template text)
SPANS = Spans(
    seq_len=29,
    frame_spans=((3, 6), (6, 9), (9, 12), (12, 15)),
    question_text=(15, 18),
    option_spans=((19, 21), (21, 23), (23, 25)),
    last=28,
    true_option=1,
)


def brute_force(edges: str, spans: Spans) -> torch.Tensor:
    """Cut edges by looping over every (query, key) pair and asking where each sits."""
    n = spans.seq_len

    def frame_of(p):
        return next((i for i, (s, e) in enumerate(spans.frame_spans) if s <= p < e), None)

    def in_group(p, group):
        video = spans.frame_spans[0][0] <= p < spans.frame_spans[-1][1]
        opts = [s <= p < e for s, e in spans.option_spans]
        return {
            "video": video,
            "question": spans.question_text[0] <= p < spans.option_spans[-1][1],
            "prompt_after_video": spans.frame_spans[-1][1] <= p < spans.last,
            "question_text": spans.question_text[0] <= p < spans.question_text[1],
            "options": any(opts),
            "true_option": opts[spans.true_option],
            "false_options": any(o for i, o in enumerate(opts) if i != spans.true_option),
            "last": p == spans.last,
            "prefix": p < spans.frame_spans[0][0],
            "frame:2": frame_of(p) == 2,
            "option:C": opts[2],
        }[group]

    block = torch.zeros(n, n, dtype=torch.bool)
    for q, k in itertools.product(range(n), range(n)):
        if k > q:
            continue
        if edges == "cross_frame":
            fq, fk = frame_of(q), frame_of(k)
            block[q, k] = fq is not None and fk is not None and fk < fq
        else:
            src, dst = edges.split("->")
            block[q, k] = in_group(k, src) and in_group(q, dst)
    return block


@pytest.mark.parametrize(
    "edges",
    [
        "cross_frame",
        "video->question",
        "video->last",
        "question->last",
        "last->last",
        "question_text->last",
        "true_option->last",
        "false_options->last",
        "video->video",
        "frame:2->option:C",
        "prefix->video",
        "options->question",
        "question->question",
        "video->prompt_after_video",
        "prompt_after_video->last",
    ],
)
def test_masks_match_brute_force(edges):
    assert torch.equal(edge_block_mask(edges, SPANS), brute_force(edges, SPANS))


def test_question_is_the_papers_span_and_the_wide_group_has_its_own_name():
    assert SPANS.positions("question") == list(range(15, 25))  # question sentence .. end of option C
    assert SPANS.positions("prompt_after_video") == list(range(15, 28))  # + the template tail before the last
    assert "prompt_after_video" in SPANS.group_names()
    # a template header ("Question: ") in front of the sentence belongs to the question span
    spans = Spans(
        seq_len=29,
        frame_spans=SPANS.frame_spans,
        question_text=(16, 18),
        option_spans=SPANS.option_spans,
        last=28,
        question_span=(15, 25),
    )
    assert spans.positions("question") == list(range(15, 25)) and spans.question == (15, 25)
    assert spans.with_true_option(0).question_span == (15, 25)
    assert spans.to_dict()["question_span"] == [15, 25]
    assert "question        15..24" in spans.describe()


@pytest.mark.parametrize(
    "question_span, match",
    [
        ((16, 25), "must contain the question sentence"),
        ((15, 24), "must contain the question sentence"),
        ((14, 25), "after the video region"),
        ((15, 29), "before the last position"),
    ],
)
def test_question_span_is_checked(question_span, match):
    with pytest.raises(KnockoutError, match=match):
        Spans(
            seq_len=29,
            frame_spans=SPANS.frame_spans,
            question_text=(15, 18),
            option_spans=SPANS.option_spans,
            last=28,
            question_span=question_span,
        )


def test_cross_frame_keeps_within_frame_edges():
    block = edge_block_mask("cross_frame", SPANS)
    for s, e in SPANS.frame_spans:
        assert not block[s:e, s:e].any()
    assert block[12, 3] and block[12, 11] and not block[3, 2]


def test_edge_spellings_normalise():
    assert normalize_edges("video -/-> question") == "video->question"
    assert normalize_edges("Question↛Last") == "question->last"
    assert normalize_edges("cross-frame") == "cross_frame"


@pytest.mark.parametrize(
    "bad, match",
    [
        ("video", "unknown edge group"),
        ("", "non-empty"),
        ("video->nowhere", "unknown token group 'nowhere'"),
        ("frame:7->last", "frame index 7 is beyond the video, which has 4 frames"),
        ("frame:x->last", "must be an integer"),
        ("option:F->last", "option 'F' does not exist"),
    ],
)
def test_bad_edge_groups(bad, match):
    with pytest.raises(KnockoutError, match=match):
        edge_block_mask(bad, SPANS)


def test_true_option_needs_answer():
    with pytest.raises(KnockoutError, match="needs to know the correct answer"):
        edge_block_mask("true_option->last", SPANS.with_true_option(None))


def test_a_token_group_and_an_edge_group_are_each_one_registry_entry(monkeypatch):
    from flowkit.intervention import edge_groups
    from flowkit.views import plots
    from flowkit.prompts import spans as spans_module
    from flowkit.views.view_models import grid_columns

    assert edge_groups.PAPER_EDGE_GROUPS == (
        "cross_frame",
        "video->question",
        "video->last",
        "question->last",
        "last->last",
    )
    first_token = spans_module.TokenGroup("first_video_token", "the video's first token", lambda s: [s.video[0]])
    monkeypatch.setattr(spans_module, "TOKEN_GROUPS", spans_module.TOKEN_GROUPS + (first_token,))
    assert "first_video_token" in SPANS.group_names() and SPANS.positions("first_video_token") == [3]
    assert edge_block_mask("first_video_token->last", SPANS).nonzero().tolist() == [[28, 3]]

    entry = edge_groups.EdgeGroup(
        "first_video_token->last", plots.OKABE_ITO["black"], title="the answer cannot read the first video token"
    )
    monkeypatch.setitem(edge_groups.EDGE_GROUPS, entry.name, entry)
    (column,) = grid_columns([entry.name], SPANS)
    assert (column.label, column.title) == ("first_video_token ↛ last", "the answer cannot read the first video token")
    assert plots.edge_group_colors([entry.name, "prefix->last"])[entry.name] == plots.OKABE_ITO["black"]


@pytest.mark.parametrize(
    "center, expected",
    [
        (0, range(0, 5)),
        (1, range(0, 6)),
        (4, range(0, 9)),
        (10, range(6, 15)),
        (25, range(21, 30)),
        (28, range(24, 30)),
        (29, range(25, 30)),
    ],
)
def test_paper_window_arithmetic(center, expected):
    # the paper: layers max(0, l-4) .. min(L, l+5) - 1
    assert LayerWindow(center).resolve(30) == tuple(expected)
    assert LayerWindow(center).resolve(30) == tuple(range(max(0, center - 4), min(30, center + 5)))


def test_other_window_sizes():
    assert LayerWindow(5, size=1).resolve(30) == (5,)
    assert LayerWindow(5, size=4).resolve(30) == (3, 4, 5, 6)


@pytest.mark.parametrize(
    "layers, match",
    [
        (LayerWindow(30), "beyond the model's depth"),
        (LayerWindow(30), "beyond the model's depth"),
        (LayerSet(()), "empty"),
        (LayerSet((2, 31, 32, 40)), r"layer\(s\) 31-32,40 are beyond"),
    ],
)
def test_bad_layers(layers, match):
    with pytest.raises(KnockoutError, match=match):
        layers.resolve(30)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: LayerWindow(-1), "centre is a layer index .* got -1; layers count from 0"),
        (lambda: LayerWindow(2.5), "centre is a layer index"),
        (lambda: LayerWindow(3, size=0), "whole size >= 1"),
        (lambda: LayerSet((3, -2)), r"layer\(s\) -2 are negative"),
    ],
)
def test_impossible_layers_are_refused_when_written(build, match):
    with pytest.raises(KnockoutError, match=match):
        build()


def test_layer_window_takes_numpy_integers():
    import numpy as np

    assert LayerWindow(np.int64(5)) == LayerWindow(5) and LayerWindow(np.int64(5)).resolve(30) == tuple(range(1, 10))


def test_parse_layers():
    assert parse_layers("5-14").layers == tuple(range(5, 15))
    assert parse_layers("1, 3,7-8").layers == (1, 3, 7, 8)
    for bad in ("", "a-b", "9-3"):
        with pytest.raises(KnockoutError):
            parse_layers(bad)


def test_spec_json_round_trip_and_key():
    spec = KnockoutSpec((Cut("video -/-> question", LayerWindow(10)), Cut("cross_frame", parse_layers("3-5"))))
    text = spec.to_json()
    again = KnockoutSpec.from_json(text)
    assert again == spec and again.to_json() == text and again.key == spec.key
    assert hash(again) == hash(spec)
    assert KnockoutSpec.single("video->last", "3-5").key != KnockoutSpec.single("video->last", "3-6").key
    with pytest.raises(KnockoutError, match="not valid JSON"):
        KnockoutSpec.from_json("{nope")
    with pytest.raises(KnockoutError, match="cuts"):
        KnockoutSpec.from_json('{"edges": "video->last"}')


def test_spec_is_frozen():
    spec = KnockoutSpec.single("video->last", LayerWindow(3))
    with pytest.raises(AttributeError):
        spec.cuts = ()


def test_block_masks_per_layer_union_and_sharing():
    spec = KnockoutSpec((Cut("video->question", LayerSet((1, 2, 3))), Cut("question->last", LayerSet((3, 4)))))
    masks = block_masks(spec, SPANS, num_layers=6)
    assert sorted(masks) == [1, 2, 3, 4]
    assert masks[1] is masks[2]  # same cuts -> one shared tensor, never one per head
    assert masks[1].shape == (29, 29) and masks[1].dtype == torch.bool
    union = edge_block_mask("video->question", SPANS) | edge_block_mask("question->last", SPANS)
    assert torch.equal(masks[3], union)
    assert torch.equal(masks[4], edge_block_mask("question->last", SPANS))


def test_refuses_query_rows_with_no_key():
    with pytest.raises(KnockoutError, match="leaves query position 0 .* no key"):
        block_masks(KnockoutSpec.single("prefix->prefix", "2"), SPANS, num_layers=4)
    spans = Spans(seq_len=10, frame_spans=((0, 2), (2, 4)), question_text=(4, 6), option_spans=((6, 7), (7, 8)), last=9)
    with pytest.raises(KnockoutError, match="layer 1"):
        block_masks(KnockoutSpec.single("frame:0->frame:0", "1"), spans, num_layers=4)


def test_count_edges_exact():
    n, layers = SPANS.seq_len, 5
    spec = KnockoutSpec.single("cross_frame", LayerSet((0, 1)))
    counts = count_edges(spec, SPANS, layers)
    per_layer_cross = sum(3 * 3 * i for i in range(4))  # frame i reads 3*i earlier video tokens, 3 queries each
    assert counts["total"] == layers * n * (n + 1) // 2
    assert counts["cut"] == 2 * per_layer_cross
    assert counts["kept"] == counts["total"] - counts["cut"]
