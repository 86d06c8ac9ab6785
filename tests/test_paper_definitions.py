"""flowkit's definitions against the paper's official analysis code, on a paper-scale prompt.

The layout below is the paper's LLaVA-NeXT-7B-Video-FT prompt (conv mode ``eval_mvbench``)
built from token counts, N = 1260 positions:

    {MVBench system prompt} USER: <image>\\n USER: Question: {question}\\nOptions:\\n(A) ...\\n(D) ...
     \\nOnly give the best option. ASSISTANT:Best option:(

=============  ===========  ======  ================================================
positions      tokens       count   what
=============  ===========  ======  ================================================
0 .. 47        prefix       48      BOS, the MVBench system prompt, " USER: "
48 .. 1199     video        1152    8 frames x 12 x 12 (frame i: 48 + 144 i .. +143)
1200 .. 1203   template     4       "\\n USER:" (the turn marker before the question)
1204 .. 1247   question     44      the paper's question span:
1204 .. 1205                2         "Question:" (the header)
1206 .. 1215                10        the question sentence
1216 .. 1218                3         "\\nOptions:"
1219 .. 1225                7         "(A) ..." then "\\n" at 1226
1227 .. 1233                7         "(B) ..." then "\\n" at 1234
1235 .. 1240                6         "(C) ..." then "\\n" at 1241
1242 .. 1247                6         "(D) ..."
1248 .. 1258   template     11      " \\nOnly give the best option. ASSISTANT:Best option:"
1259           last         1       "(" — its next token is the option letter
=============  ===========  ======  ================================================

(The 44 question tokens and 15 template tokens are the counts the comparison in issue 13
measured. Which template tokens sit before or after the question changes no number
asserted here: every count depends only on the group sizes and on N, and the random
control's pool only on the first video token, 48.)

The paper's code (``byminji/map-the-flow``, ``analysis/effective_pathway_analysis.py``) is
restated below in our own words, index logic only, as :func:`paper_code_allowed`: it starts
from the causal (lower-triangular) matrix and sets to 0 every (query, key) pair of each
blocked (keys, queries, layers) group, with

- ``vision_range`` = the 1152 video positions, split into 8 frames of 144,
- ``question_range`` = the "Question: ... (D) ..." positions,
- ``last_token`` = N - 1,

and counts an edge as kept when its entry is 1, summed over layers, against N(N+1)/2 a layer.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from flowkit import KnockoutError
from flowkit.analysis.result_cache import DEFINITIONS_KEY, ResultCache, _checksum
from flowkit.intervention.edge_groups import DEFINITIONS_VERSION
from flowkit.intervention.masks import block_masks, count_edges, edge_block_mask
from flowkit.analysis.pathways import (
    PAPER_PATHWAY_PRESETS,
    PathwayWindows,
    paper_pathway_preset,
    paper_random_block_masks,
    paper_random_edge_count,
    paper_random_pool,
    paper_windows,
    pathway_spec,
    pathway_suppressed_fraction,
    scale_windows,
)
from flowkit.prompts.spans import Spans

N = 1260
VIDEO_START, FRAMES, PER_FRAME = 48, 8, 144
VIDEO_END = VIDEO_START + FRAMES * PER_FRAME  # 1200
QUESTION = (1204, 1248)  # half-open: "Question:" .. end of option D
LAST = N - 1

PAPER_LAYOUT = Spans(
    seq_len=N,
    frame_spans=tuple((VIDEO_START + i * PER_FRAME, VIDEO_START + (i + 1) * PER_FRAME) for i in range(FRAMES)),
    question_text=(1206, 1216),
    option_spans=((1219, 1226), (1227, 1234), (1235, 1241), (1242, 1248)),
    last=LAST,
    true_option=0,
    question_span=QUESTION,
)


def test_layout_is_the_one_written_down():
    assert PAPER_LAYOUT.video == (48, 1200) and PAPER_LAYOUT.num_video_tokens == 1152
    assert PAPER_LAYOUT.question == (1204, 1248) and len(PAPER_LAYOUT.positions("question")) == 44
    assert PAPER_LAYOUT.positions("prompt_after_video") == list(range(1200, 1259))  # 59 = 44 + 15 template
    assert PAPER_LAYOUT.positions("prefix") == list(range(48))


# ------------------------------------------------------------------ the paper's code, restated


def paper_code_ranges():
    vision = list(range(VIDEO_START, VIDEO_END))
    frames = [vision[i * PER_FRAME : (i + 1) * PER_FRAME] for i in range(FRAMES)]
    # cross-frame: queries of frame i, keys of every earlier frame
    inter_frame = [(sum(frames[:i], []), frames[i]) for i in range(1, FRAMES)]
    question = list(range(*QUESTION))
    return vision, inter_frame, question, LAST


def paper_code_allowed(blocked: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """1 where the paper's attention mask lets the query (row) read the key (column)."""
    allowed = torch.ones(N, N, dtype=torch.uint8).tril()
    for keys, queries in blocked:
        if keys and queries:
            allowed[torch.tensor(queries)[:, None], torch.tensor(keys)[None, :]] = 0
    return allowed


def paper_code_pathway_groups(num_layers: int, inter_frame_kept, video_to_question_kept, question_to_last_kept):
    """The paper's ``block_mappings`` of an effective-pathway target, as (keys, queries, layers)."""
    vision, inter_frame, question, last = paper_code_ranges()
    outside = lambda kept: [layer for layer in range(num_layers) if layer not in kept]  # noqa: E731
    groups = [(keys, queries, outside(inter_frame_kept)) for keys, queries in inter_frame]
    groups += [
        (vision, question, outside(video_to_question_kept)),
        (question, [last], outside(question_to_last_kept)),
        ([last], [last], list(range(num_layers))),
        (vision, [last], list(range(num_layers))),
        (vision, vision, list(range(video_to_question_kept[-1] + 1, num_layers))),
        (question, question, list(range(question_to_last_kept[-1] + 1, num_layers))),
    ]
    return groups


@pytest.mark.parametrize(
    "edges, expected",
    [
        ("cross_frame", 580_608),
        ("video->question", 50_688),
        ("question->last", 44),
        ("video->last", 1_152),
        ("last->last", 1),
    ],
)
def test_blocked_pairs_per_edge_group_equal_the_paper_codes(edges, expected):
    vision, inter_frame, question, last = paper_code_ranges()
    paper_blocked = {
        "cross_frame": inter_frame,
        "video->question": [(vision, question)],
        "question->last": [(question, [last])],
        "video->last": [(vision, [last])],
        "last->last": [([last], [last])],
    }[edges]
    paper_cut = ~paper_code_allowed(paper_blocked).bool() & torch.ones(N, N, dtype=torch.bool).tril()
    ours = edge_block_mask(edges, PAPER_LAYOUT)
    assert int(ours.sum()) == expected
    assert torch.equal(ours, paper_cut)


def test_the_wide_group_is_what_question_used_to_mean():
    assert int(edge_block_mask("video->prompt_after_video", PAPER_LAYOUT).sum()) == 1152 * 59  # 67,968
    assert int(edge_block_mask("prompt_after_video->last", PAPER_LAYOUT).sum()) == 59


@pytest.mark.parametrize(
    "preset, num_layers, kept_percent, digits",
    [
        ("llava-next-7b-video-ft", 32, 42.25, 2),
        ("llava-next-13b-video-ft", 40, 35.8, 1),
    ],
)
def test_pathway_masks_keep_what_the_paper_codes_keep(preset, num_layers, kept_percent, digits):
    windows = paper_windows(num_layers, preset)
    spec = pathway_spec(windows, num_layers)
    counts = count_edges(spec, PAPER_LAYOUT, num_layers)
    assert round(100 * counts["kept_fraction"], digits) == kept_percent
    # layer by layer, the mask is the paper code's
    ranges = lambda w: list(range(w[0], w[1] + 1))  # noqa: E731
    groups = paper_code_pathway_groups(
        num_layers, ranges(windows.cross_frame), ranges(windows.video_to_question), ranges(windows.question_to_last)
    )
    ours = block_masks(spec, PAPER_LAYOUT, num_layers)
    kept = 0
    for layer in range(num_layers):
        allowed = paper_code_allowed([(k, q) for k, q, layers in groups if layer in layers])
        kept += int(allowed.sum())
        assert torch.equal(ours[layer], ~allowed.bool() & torch.ones(N, N, dtype=torch.bool).tril()), layer
    assert kept == counts["kept"]


# --------------------------------------------------------------------------------- presets


def test_presets_are_the_paper_codes_windows():
    # 0-indexed, inclusive; the official code's range(start, stop) lists
    expected = {
        "llava-next-7b-video-ft": (32, (5, 14), (5, 19), (15, 24), 0.58),
        "llava-next-13b-video-ft": (40, (5, 14), (5, 19), (15, 29), 0.63),
        "mini-internvl-4b-video-ft": (32, (5, 14), (5, 19), (10, 29), 0.60),
        "videollama3-7b": (28, (0, 14), (5, 19), (20, 27), 0.42),
    }
    assert set(PAPER_PATHWAY_PRESETS) == set(expected)
    for name, (layers, cross, vq, ql, f) in expected.items():
        preset = paper_pathway_preset(name)
        w = preset.windows
        assert (preset.num_layers, w.cross_frame, w.video_to_question, w.question_to_last) == (layers, cross, vq, ql)
        # video->video is cut after the video->question window, question->question after question->last
        assert (w.video_to_video_until, w.question_to_question_until) == (vq[1], ql[1])
        assert preset.suppressed_fraction == f
        assert paper_windows(layers, name) == w
    assert paper_pathway_preset("LLaVA_NeXT-13B-Video-FT").num_layers == 40
    assert paper_windows(32) == paper_pathway_preset("llava-next-7b-video-ft").windows
    with pytest.raises(KnockoutError, match="no pathway preset named 'llava-7b'.*llava-next-7b-video-ft"):
        paper_pathway_preset("llava-7b")


def test_other_depths_scale_by_the_documented_rule():
    seven = paper_pathway_preset("llava-next-7b-video-ft").windows
    # boundaries of half-open windows scale by L / 32, rounded half up
    assert paper_windows(40) == PathwayWindows(
        cross_frame=(6, 18),
        video_to_question=(6, 24),
        question_to_last=(19, 30),
        video_to_video_until=24,
        question_to_question_until=30,
    )
    assert paper_windows(30) == PathwayWindows(
        cross_frame=(5, 13),
        video_to_question=(5, 18),
        question_to_last=(14, 22),
        video_to_video_until=18,
        question_to_question_until=22,
    )
    assert scale_windows(seven, 32, 32) == seven
    tiny = paper_windows(2)
    for lo, hi in (tiny.cross_frame, tiny.video_to_question, tiny.question_to_last):
        assert 0 <= lo <= hi <= 1


# -------------------------------------------------------------------------- random control


def test_paper_random_control_counts_pool_and_seed():
    f, layers = 0.58, 3
    per_layer = paper_random_edge_count(N, f)
    assert per_layer == int(0.58 * (N * (N + 1) // 2)) == 460_769
    pool = paper_random_pool(N, VIDEO_START)
    assert len(pool) == (N - VIDEO_START) * (N - VIDEO_START + 1) // 2 == 735_078  # diagonal included
    masks = paper_random_block_masks(N, VIDEO_START, layers, f, seed=7)
    assert sorted(masks) == list(range(layers))
    causal = torch.ones(N, N, dtype=torch.bool).tril()
    for mask in masks.values():
        assert mask.shape == (N, N) and mask.dtype == torch.bool
        assert int(mask.sum()) == per_layer  # the same count in every layer
        assert not (mask & ~causal).any()  # causal pairs only
        assert not mask[:VIDEO_START].any() and not mask[:, :VIDEO_START].any()  # nothing before the video
    assert any(bool(m.diagonal().any()) for m in masks.values())  # the diagonal is in the pool
    assert not torch.equal(masks[0], masks[1])  # each layer is its own draw
    again = paper_random_block_masks(N, VIDEO_START, layers, f, seed=7)
    assert all(torch.equal(masks[layer], again[layer]) for layer in masks)
    other = paper_random_block_masks(N, VIDEO_START, 1, f, seed=8)
    assert not torch.equal(masks[0], other[0])


def test_paper_random_control_refuses_what_it_cannot_do():
    with pytest.raises(KnockoutError, match="too short for that share"):
        paper_random_block_masks(20, 15, 1, 0.58, seed=0)
    with pytest.raises(KnockoutError, match="video starts at position 0"):
        paper_random_block_masks(20, 0, 1, 0.1, seed=0)
    with pytest.raises(KnockoutError, match=r"\[0, 1\)"):
        paper_random_edge_count(20, 1.5)


def test_suppressed_fraction_of_the_7b_pathways():
    windows = paper_windows(32)
    f = pathway_suppressed_fraction(windows, PAPER_LAYOUT, 32)
    assert round(100 * (1 - f), 2) == 42.25
    assert pathway_suppressed_fraction(windows, [PAPER_LAYOUT, PAPER_LAYOUT], 32) == pytest.approx(f)


# ------------------------------------------------------------------------------- cache


def test_cache_never_reuses_records_of_other_definitions(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put_many("model", "task/0001", {"{}": {"probs": [1.0]}})
    assert cache.get("model", "task/0001", "{}")[DEFINITIONS_KEY] == DEFINITIONS_VERSION
    path = next(tmp_path.rglob("*.json"))
    data = json.loads(path.read_text())
    payload = {**data["{}"]["payload"], DEFINITIONS_KEY: DEFINITIONS_VERSION - 1}
    data["{}"] = {"payload": payload, "checksum": _checksum(payload)}  # a valid record of the old definitions
    path.write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a miss, not a corrupt record
        assert cache.get("model", "task/0001", "{}") is None
    del payload[DEFINITIONS_KEY]  # records written before the version existed
    data["{}"] = {"payload": payload, "checksum": _checksum(payload)}
    path.write_text(json.dumps(data))
    assert cache.get("model", "task/0001", "{}") is None
