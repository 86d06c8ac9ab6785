"""Every supported family beyond LLaVA-NeXT-Video, on tiny random models of the real classes.

Each family's checkpoint is built once per module (real processor, SmolLM2 tokenizer with
the family's special tokens, the family's chat template) and loaded through
``load_videollm`` like a downloaded one. For every family: spans agree with the
processor's expansion and the model's real visual features, a run with nothing cut equals
the stock model bit for bit, cut edges get exactly zero attention, and NF4 loads on CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowkit import FlowkitError, KnockoutSpec, LayerSet, LayerWindow, knockout, load_videollm
from flowkit.families import (
    InternVLAdapter,
    LlavaOnevisionAdapter,
    Qwen2_5_VLAdapter,
    Qwen3VLAdapter,
    VideoLlama3Adapter,
)
from flowkit.intervention.masks import edge_block_mask
from flowkit.testing.tiny_models import TOY_BUILDERS

from conftest import OPTIONS, QUESTION, random_frames

FAMILIES = ["llava_onevision", "qwen2_5_vl", "qwen3_vl", "video_llama_3", "internvl"]
ADAPTERS = {
    "llava_onevision": LlavaOnevisionAdapter,
    "qwen2_5_vl": Qwen2_5_VLAdapter,
    "qwen3_vl": Qwen3VLAdapter,
    "video_llama_3": VideoLlama3Adapter,
    "internvl": InternVLAdapter,
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Family name -> checkpoint folder, built on first use."""
    root = tmp_path_factory.mktemp("families")
    built = {}

    def get(family):
        if family not in built:
            built[family] = TOY_BUILDERS[family](root / family, seed=0)
        return built[family]

    return get


@pytest.fixture(scope="module")
def models(checkpoints):
    """(family, quant, attention) -> loaded VideoLLM, loaded on first use."""
    loaded = {}

    def get(family, quant="fp32", attn="sdpa"):
        key = (family, quant, attn)
        if key not in loaded:
            loaded[key] = load_videollm(checkpoints(family), quant=quant, attn_implementation=attn)
        return loaded[key]

    return get


def stock_last_logits(vllm, prepared):
    with torch.inference_mode():
        return vllm.model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float()


# ------------------------------------------------------------------ what the model really sees
def visual_tokens_per_span(vllm, prepared) -> list[int]:
    """Visual features per frame span, computed by the model's own vision path.

    For LLaVA-OneVision the last feature is the newline vector that follows the frames.
    """
    model, inputs = vllm.model.model, prepared.inputs
    with torch.inference_mode():
        if vllm.adapter.family == "LLaVA-OneVision":
            feats = model.get_video_features(inputs["pixel_values_videos"]).pooler_output
            frames = inputs["pixel_values_videos"].shape[1]
            total = feats.shape[1] - 1  # the image_newline vector
            return [total // frames] * frames
        if vllm.adapter.family.startswith("Qwen"):
            feats = model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
            blocks = int(inputs["video_grid_thw"][0, 0])
            return [sum(f.shape[0] for f in feats) // blocks] * blocks
        if vllm.adapter.family == "VideoLLaMA3":
            feats = model.get_video_features(
                inputs["pixel_values_videos"], inputs["video_grid_thw"], inputs["video_merge_sizes"]
            ).pooler_output
            kept = torch.cat(feats)[inputs["video_compression_mask"]]
            per_frame = inputs["video_compression_mask"].reshape(int(inputs["video_grid_thw"][0, 0]), -1).sum(1)
            assert kept.shape[0] == int(per_frame.sum())
            return per_frame.tolist()
        feats = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output  # InternVL: one tile/frame
        return [feats.shape[1]] * feats.shape[0]


def placeholder_id(vllm) -> int:
    processor = vllm.processor
    return processor.image_token_id if vllm.adapter.family == "InternVL" else processor.video_token_id


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_frames, height, width", [(8, 48, 64), (5, 64, 40)])
def test_spans_match_processor_expansion_and_visual_features(models, family, num_frames, height, width):
    vllm = models(family)
    assert type(vllm.adapter) is ADAPTERS[family]
    frames = random_frames(num_frames, height, width, seed=num_frames)
    frames[2] = frames[1]  # a repeated frame (VideoLLaMA3 prunes most of its tokens)
    prepared = vllm.prepare(frames, QUESTION, OPTIONS[:3], answer=2)
    spans, ids = prepared.spans, prepared.inputs["input_ids"][0]
    per_span = visual_tokens_per_span(vllm, prepared)

    # one frame span per visual block, each exactly that block's placeholder tokens
    assert [e - s for s, e in spans.frame_spans] == per_span
    expected_spans = math.ceil(num_frames / spans.frames_per_span)
    assert spans.num_frames == expected_spans
    assert spans.frames_per_span == (2 if family.startswith("qwen") else 1)
    token = placeholder_id(vllm)
    video_start, video_end = spans.video
    bounds = [video_start] + [p for span in spans.frame_spans for p in span] + [video_end]
    assert bounds == sorted(bounds)  # disjoint, in order, inside the video region
    for s, e in spans.frame_spans:
        assert bool((ids[s:e] == token).all())
    # every placeholder of the prompt lies in the video region; outside frames only OneVision's newline
    in_frames = sum(e - s for s, e in spans.frame_spans)
    assert int((ids == token).sum()) == int((ids[video_start:video_end] == token).sum())
    assert int((ids == token).sum()) == in_frames + (1 if family == "llava_onevision" else 0)

    # text spans decode to the question and options; the prompt ends in the answer prefix
    decode = vllm.tokenizer.decode
    assert decode(ids[slice(*spans.question_text)]).strip() == QUESTION
    for letter, option, span in zip("ABC", OPTIONS, spans.option_spans):
        assert decode(ids[slice(*span)]).strip() == f"({letter}) {option}"
    assert video_end <= spans.question_text[0] and spans.last == len(ids) - 1
    # the paper's question span: no header in these templates, so question sentence .. last option
    assert spans.positions("question") == list(range(spans.question_text[0], spans.option_spans[-1][1]))
    body = f"{QUESTION}\nOptions:\n" + "\n".join(f"({l}) {o}" for l, o in zip("ABC", OPTIONS))
    assert decode(ids[slice(*spans.question)]).strip() == body
    assert spans.positions("prompt_after_video") == list(range(video_end, spans.last))
    assert decode(ids[-4:]).endswith("Best option:(") and spans.true_option == 2
    assert "frame" in spans.describe()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("quant", ["fp32", "nf4"])
def test_no_knockout_is_bit_identical_to_stock(models, family, quant):
    vllm = models(family, quant)
    prepared = vllm.prepare(random_frames(seed=3), QUESTION, OPTIONS, answer=1)
    stock = stock_last_logits(vllm, prepared)
    assert torch.isfinite(stock).all()
    lm_config = vllm.language_model.config
    with knockout(vllm, KnockoutSpec(), prepared.spans):  # the knockout attention function, nothing cut
        assert lm_config._attn_implementation == "flowkit_sdpa"
        assert torch.equal(stock_last_logits(vllm, prepared), stock)
    assert lm_config._attn_implementation == "sdpa"
    cut = vllm.last_logits(prepared, KnockoutSpec.single("question->last", LayerWindow(1)))
    assert not torch.equal(cut, stock)
    assert torch.equal(vllm.last_logits(prepared), stock)


@pytest.mark.parametrize("family", FAMILIES)
def test_cut_edges_get_zero_attention(models, family):
    vllm = models(family, "fp32", "eager")
    prepared = vllm.prepare(random_frames(6, seed=5), QUESTION, OPTIONS, answer=0)
    spans = prepared.spans
    with torch.inference_mode():
        clean = vllm.model(**prepared.inputs, output_attentions=True).attentions
        for edges in ("cross_frame", "video->question", "question->last", "true_option->last"):
            block = edge_block_mask(edges, spans)
            assert block.any()
            with knockout(vllm, KnockoutSpec.single(edges, LayerSet((1,))), spans):
                cut = vllm.model(**prepared.inputs, output_attentions=True).attentions
            assert len(cut) == vllm.num_layers
            assert torch.equal(cut[0], clean[0]), f"{edges}: layer 0 is before the cut and must not change"
            weights = cut[1][0]  # (heads, N, N)
            assert torch.all(weights[:, block] == 0), f"{edges}: cut edges still attended"
            assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)), atol=1e-5)
            assert not torch.all(clean[1][0][:, block] == 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_nf4_quantizes_language_model_only(models, family):
    import bitsandbytes as bnb

    vllm = models(family, "nf4")
    quantized = [n for n, m in vllm.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    lm_linears = [
        n
        for n, m in vllm.model.named_modules()
        if n.startswith("model.language_model.") and isinstance(m, torch.nn.Linear)
    ]
    assert quantized and sorted(quantized) == sorted(lm_linears)
    assert vllm.model.get_submodule(quantized[0]).weight.quant_state.quant_type == "nf4"


# ------------------------------------------------------------------ family specifics
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_blocks_pair_frames_and_cross_frame_cuts_between_blocks(models, family):
    vllm = models(family)
    prepared = vllm.prepare(random_frames(7), QUESTION, OPTIONS)  # odd: the last frame is repeated
    spans = prepared.spans
    assert spans.frames_per_span == 2 and spans.num_frames == 4
    assert int(prepared.inputs["video_grid_thw"][0, 0]) == 4
    block = edge_block_mask("cross_frame", spans)
    for i, (qs, qe) in enumerate(spans.frame_spans):
        assert not block[qs:qe, qs:qe].any()  # the two frames of a block always see each other
        for j, (ks, ke) in enumerate(spans.frame_spans):
            assert bool(block[qs:qe, ks:ke].all()) == (j < i)
    # separators (Qwen3-VL's timestamps and markers) are neither side of a cross-frame cut
    in_frames = torch.zeros(spans.seq_len, dtype=torch.bool)
    for s, e in spans.frame_spans:
        in_frames[s:e] = True
    assert not block[~in_frames].any() and not block[:, ~in_frames].any()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_needs_mm_token_type_ids(models, family):
    vllm = models(family)
    prepared = vllm.prepare(random_frames(4), QUESTION, OPTIONS)
    assert "mm_token_type_ids" in prepared.inputs
    without = {k: v for k, v in prepared.inputs.items() if k != "mm_token_type_ids"}
    with torch.inference_mode():
        if family == "qwen2_5_vl":  # silently 1-D positions instead of M-RoPE
            silently_different = vllm.model(**without, logits_to_keep=1).logits[0, -1]
            assert not torch.equal(silently_different, stock_last_logits(vllm, prepared))
        else:  # Qwen3-VL refuses by itself
            with pytest.raises(ValueError, match="mm_token_type_ids"):
                vllm.model(**without, logits_to_keep=1)
    with pytest.raises(FlowkitError, match="mm_token_type_ids"):
        vllm.adapter.check_inputs(without)


def test_qwen3_layout_has_timestamps_between_blocks(models):
    vllm = models("qwen3_vl")
    prepared = vllm.prepare(random_frames(4), QUESTION, OPTIONS)
    spans, ids = prepared.spans, prepared.inputs["input_ids"][0]
    decode = vllm.tokenizer.decode
    between = decode(ids[spans.frame_spans[0][1] : spans.frame_spans[1][0]])
    assert between == "<|vision_end|><2.5 seconds><|vision_start|>"  # frames 2-3 at 1 fps: (2 + 3) / 2
    assert decode(ids[spans.video[0] : spans.frame_spans[0][0]]) == "<|vision_start|><0.5 seconds><|vision_start|>"
    with pytest.raises(FlowkitError, match="at least 2 frames"):
        vllm.prepare(random_frames(1), QUESTION, OPTIONS)


def test_video_llama3_frames_keep_their_own_token_counts(models):
    vllm = models("video_llama_3")
    frames = random_frames(4)
    frames[3] = frames[2]
    vllm.adapter.frame_rate = 2.0
    try:
        prepared = vllm.prepare(frames, QUESTION, OPTIONS)
    finally:
        vllm.adapter.frame_rate = 1.0
    spans, ids = prepared.spans, prepared.inputs["input_ids"][0]
    lengths = [e - s for s, e in spans.frame_spans]
    assert lengths[3] < lengths[2] and lengths[3] >= 1  # the repeated frame was pruned
    assert vllm.tokenizer.decode(ids[spans.frame_spans[0][1] : spans.frame_spans[1][0]]) == ",Time 0.5s:"


def test_internvl_and_onevision_separators(models):
    internvl = models("internvl")
    prepared = internvl.prepare(random_frames(3), QUESTION, OPTIONS)
    spans, ids = prepared.spans, prepared.inputs["input_ids"][0]
    decode = internvl.tokenizer.decode
    assert decode(ids[spans.video[0] : spans.frame_spans[0][0]]) == "Frame1: <img>"
    assert decode(ids[spans.frame_spans[0][1] : spans.frame_spans[1][0]]) == "</img>\nFrame2: <img>"
    assert decode(ids[spans.frame_spans[-1][1] : spans.video[1]]) == "</img>"

    onevision = models("llava_onevision")
    prepared = onevision.prepare(random_frames(3), QUESTION, OPTIONS)
    spans = prepared.spans
    assert spans.video[1] == spans.frame_spans[-1][1] + 1  # the trailing image_newline token
    assert spans.num_video_tokens == 3 * LlavaOnevisionAdapter.tokens_per_frame(onevision.processor)


def test_adapter_errors_name_the_problem(models):
    vllm = models("internvl")
    with pytest.raises(FlowkitError, match=r"\(T, H, W, 3\)"):
        vllm.prepare(np.zeros((4, 32, 32), dtype=np.uint8), QUESTION, OPTIONS)
    with pytest.raises(FlowkitError, match="at least 2 options"):
        vllm.prepare(random_frames(2), QUESTION, ["left"])


# ------------------------------------------------------------------ declarations and registration
def test_every_family_declares_itself_in_its_own_module():
    from flowkit.families import ADAPTERS, VARIANTS, PllavaVideoAdapter

    registered = set(ADAPTERS.values()) | {v for variants in VARIANTS.values() for v in variants}
    assert PllavaVideoAdapter in VARIANTS["llava_next_video"]
    assert set(ADAPTERS) == set(TOY_BUILDERS)  # a tiny model of every registered family
    for adapter in registered:
        assert adapter.undeclared() == [], adapter
        assert "supports_replay" in vars(adapter), f"{adapter.__name__} must state supports_replay"
        assert callable(adapter.eager_attention())


@pytest.mark.parametrize("family", list(TOY_BUILDERS))
def test_decoder_and_attention_base_are_the_declared_ones(models, family):
    import operator
    import sys

    from flowkit.intervention.attention import _base_attention
    from flowkit.families import language_model_of

    vllm = models(family)
    decoder = operator.attrgetter(vllm.adapter.decoder_path)(vllm.model)
    assert vllm.language_model is decoder
    assert language_model_of(vllm.model) is decoder  # a bare transformers model: via the adapter of its config
    eager = vllm.adapter.eager_attention()
    for layer in decoder.layers:
        # the declared base is the eager attention transformers itself runs for this decoder
        assert eager is sys.modules[type(layer.self_attn).__module__].eager_attention_forward
        assert _base_attention("eager", layer.self_attn) is eager


def test_unknown_decoder_layouts_raise_clear_errors(models):
    from flowkit import KnockoutError
    from flowkit.families import language_model_of

    with pytest.raises(KnockoutError, match="cannot tell where the decoder layers of Linear are"):
        language_model_of(torch.nn.Linear(2, 2))

    class Moved(InternVLAdapter):
        decoder_path = "model.text_model"

    with pytest.raises(KnockoutError, match="no decoder stack .* at `model.text_model`"):
        Moved().decoder(models("internvl").model)


def test_registration_refuses_undeclared_or_clashing_families():
    from flowkit.families import ADAPTERS, register_family
    from flowkit.families.placeholder_base import PlaceholderVideoAdapterBase

    before = dict(ADAPTERS)

    class Undeclared(PlaceholderVideoAdapterBase):
        model_types = ("made_up_video_llm",)
        family = "Made up"
        model_class_name = "MadeUpForConditionalGeneration"
        attention_base = "transformers.models.llama.modeling_llama"

    with pytest.raises(FlowkitError, match="does not declare supports_replay"):
        register_family(Undeclared)
    with pytest.raises(FlowkitError, match="'internvl' is registered twice"):
        register_family(type("Twin", (InternVLAdapter,), {"supports_replay": True}))
    assert ADAPTERS == before


def test_video_llama3_paper_span_convention(models):
    vllm = models("video_llama_3")
    kit = vllm.prepare(random_frames(3), QUESTION, OPTIONS)
    vllm.adapter.span_convention = "paper"
    try:
        paper = vllm.prepare(random_frames(3), QUESTION, OPTIONS)
        vllm.adapter.span_convention = "neither"
        with pytest.raises(FlowkitError, match="span_convention"):
            vllm.prepare(random_frames(3), QUESTION, OPTIONS)
    finally:
        vllm.adapter.span_convention = "kit"
    ids = paper.inputs["input_ids"][0]
    decode = vllm.tokenizer.decode
    assert paper.spans.video == kit.spans.video
    assert decode(ids[slice(*paper.spans.frame_spans[0])]).startswith("Time 0.0s:")
    assert decode(ids[slice(*paper.spans.frame_spans[1])]).startswith(",Time 1.0s:")
    assert [e for _, e in paper.spans.frame_spans] == [e for _, e in kit.spans.frame_spans]
    assert decode(ids[slice(*paper.spans.question_text)]).endswith("?\n")
    assert all(decode(ids[slice(*o)]).endswith("\n") for o in paper.spans.option_spans)
    assert paper.spans.question[1] == paper.spans.option_spans[-1][1]
