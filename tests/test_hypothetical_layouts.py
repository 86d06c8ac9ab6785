"""Spans of layouts no model has yet (flowkit.prompts.hypothetical) and the pathway mask's kept share on them."""

from __future__ import annotations

import pytest

from flowkit import KnockoutError
from flowkit.analysis.pathways import paper_windows, pathway_suppressed_fraction
from flowkit.prompts.hypothetical import hypothetical_spans, paper_prompt_spans, relayout
from flowkit.prompts.spans import Spans


def kept_percent(spans: Spans, layers: int = 30) -> float:
    return 100 * (1 - pathway_suppressed_fraction(paper_windows(layers), spans, layers))


@pytest.mark.parametrize("tokens_per_frame, kept", [(4, 70), (9, 59), (16, 51), (36, 43), (144, 37)])
def test_kept_share_of_the_paper_mask_on_the_issues_prompt_shape(tokens_per_frame, kept):
    # issue 26: 12 prefix, 25 question and 8 other text tokens, the 7B mask scaled to 30 layers
    spans = hypothetical_spans(tokens_per_frame)
    assert spans.seq_len == 12 + 8 * tokens_per_frame + 25 + 8
    assert round(kept_percent(spans)) == kept


def test_the_papers_prompt_keeps_42_25_percent_under_its_own_mask():
    spans = paper_prompt_spans()
    assert spans.seq_len == 1260 and spans.num_video_tokens == 8 * 144
    assert spans.video == (48, 1200) and spans.question == (1204, 1248)
    assert round(kept_percent(spans, 32), 2) == 42.25
    # scaled to the kit's 30 layers the windows are a little narrower
    assert round(kept_percent(spans, 30), 2) == 41.40


def test_hypothetical_spans_lay_out_every_group():
    spans = hypothetical_spans(16, true_option=1)
    assert spans.video == (12, 140) and spans.num_frames == 8
    assert spans.question == (141, 166) and len(spans.positions("question")) == 25
    assert len(spans.option_spans) == 4 and spans.option_spans[-1][1] == 166
    assert spans.last == spans.seq_len - 1 == 172
    assert spans.positions("true_option") == list(range(*spans.option_spans[1]))
    with pytest.raises(KnockoutError, match="cannot hold"):
        hypothetical_spans(4, question=10)
    with pytest.raises(KnockoutError, match="at least 1"):
        hypothetical_spans(0)


@pytest.fixture(scope="module")
def real_prompts():
    """One shipped question prepared by the kit's processor at 32x32 (4 tokens per frame) and 64x64 (16)."""
    from flowkit.data import shipped_questions
    from flowkit.families.llava_next_video import LlavaNextVideoAdapter
    from flowkit.model.checkpoints import CHATML_VIDEO_TEMPLATE, llava_next_video_processor
    from flowkit.smol_video.smollm2 import video_tokenizer

    sample = shipped_questions()[0]
    out = {}
    for size in (32, 64):
        processor = llava_next_video_processor(video_tokenizer(), size, 8, CHATML_VIDEO_TEMPLATE)
        prepared = LlavaNextVideoAdapter().prepare(
            processor, sample.frames, sample.question, sample.candidates, answer_index=sample.answer_index
        )
        out[size] = prepared.spans
    return out


def test_the_builder_gives_the_spans_of_a_real_prompt_of_the_shipped_layout(real_prompts):
    real = real_prompts[32]
    # the kit's ChatML prompt: 3 prefix tokens, 8 x 4 video tokens, "\n", the question span (sentence,
    # "\nOptions:\n", four "(X) word" lines), the instruction and assistant prefix, the last position
    question = real.question[1] - real.question[0]
    options = tuple(e - s for s, e in real.option_spans)
    other = real.seq_len - real.video[0] - real.num_video_tokens - question
    built = hypothetical_spans(
        4,
        prefix=real.video[0],
        question=question,
        options=options,
        other=other,
        question_text=real.question_text[1] - real.question_text[0],
        true_option=real.true_option,
    )
    assert built == real


def test_relayout_moves_a_real_prompt_to_another_layout(real_prompts):
    assert relayout(real_prompts[32], 16) == real_prompts[64]
    assert relayout(real_prompts[64], 4) == real_prompts[32]
    assert relayout(paper_prompt_spans(), 4) == paper_prompt_spans(4)


def test_kept_share_by_layout_walks_one_prompt_through_the_layouts_the_chapter_draws():
    from flowkit.analysis.pathways import LAYOUT_TOKENS, kept_share_by_layout, paper_prompt_kept_share

    prompt = hypothetical_spans(4)  # the issue's prompt shape at the shipped layout
    table = kept_share_by_layout(prompt, 30)
    assert table["tokens_per_frame"].tolist() == list(LAYOUT_TOKENS)
    for row in table.itertuples():  # each row is the same prompt laid out again, counted exactly
        again = hypothetical_spans(row.tokens_per_frame)
        assert row.prompt_len == again.seq_len
        assert row.kept_share == pytest.approx(kept_percent(again) / 100, abs=1e-12)
        assert row.video_share == pytest.approx(8 * row.tokens_per_frame / again.seq_len)
    assert table["kept_share"].is_monotonic_decreasing  # more video, more of the prompt cut
    assert round(100 * paper_prompt_kept_share(), 2) == 42.25
    from flowkit.analysis.pathways import layouts_reaching

    above, below = layouts_reaching(table, paper_prompt_kept_share())
    shares = table.set_index("tokens_per_frame")["kept_share"]
    assert shares[above] > paper_prompt_kept_share() >= shares[below] and below == min(shares.index[shares <= 0.4225])
    assert layouts_reaching(table, 0.0) == (max(LAYOUT_TOKENS), None)  # no layout keeps that little
    assert layouts_reaching(table, 1.0) == (None, min(LAYOUT_TOKENS))
    with pytest.raises(KnockoutError, match="back to back"):
        kept_share_by_layout(_with_separators(), 30)


def _with_separators() -> Spans:
    """A prompt whose frames are not back to back (a separator token between them)."""
    from dataclasses import replace

    spans = hypothetical_spans(4)
    frames = tuple((12 + 5 * i, 12 + 5 * i + 4) for i in range(8))
    return replace(spans, frame_spans=frames, frames_per_span=1, video_span=(12, 52))
