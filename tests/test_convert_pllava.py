"""The PLLaVA converter on a synthetic checkpoint with PLLaVA's weight names, scaled down.

The source is built here the way a PLLaVA checkpoint is laid out (transformers 4.40
names: ``vision_tower.vision_model.*``, ``multi_modal_projector.linear_{1,2}.*``,
``language_model.model.*``, ``language_model.lm_head.weight``; PLLaVA's config fields;
a Vicuna-style tokenizer with ``<image>``), converted with ``flowkit.convert.pllava`` and loaded with
``flowkit.load_videollm``. The video tokens are checked against PLLaVA's own recipe
(project every patch, then ``AdaptiveAvgPool3d``), written out independently below.
"""

from __future__ import annotations

import json
import string

import pytest
import torch
from safetensors.torch import load_file, save_file

from flowkit import KnockoutSpec, LayerWindow, load_videollm
from flowkit.convert import ConversionError
from flowkit.convert.pllava import convert_pllava, main
from flowkit.families import PllavaVideoAdapter

from conftest import OPTIONS, QUESTION, random_frames

FRAMES, IMAGE, PATCH = 4, 32, 8  # 4x4 patches pooled to 2x2 (the paper: 8 frames, 24x24 -> 12x12)
LORA_RANK, LORA_ALPHA = 4, 8.0


def vicuna_style_tokenizer():
    """A character-level tokenizer built like Vicuna's (Llama SentencePiece BPE, byte fallback).

    Its normalizer prepends "▁" to every piece of text, also right after a special token
    such as ``<video>``, as the LLaVA-NeXT (Vicuna) tokenizers do.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    pieces = (
        specials
        + [f"<0x{i:02X}>" for i in range(256)]
        + ["▁", "\n"]
        + list(string.ascii_letters + string.digits + string.punctuation)
    )
    backend = Tokenizer(
        models.BPE(
            vocab={p: i for i, p in enumerate(pieces)}, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True
        )
    )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = LlamaTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def pllava_source(folder, *, lora: bool = False, shards: int = 2) -> dict:
    """Write a tiny PLLaVA-format checkpoint; returns its full (unmerged) state dict."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    tokenizer = vicuna_style_tokenizer()
    vocab = len(tokenizer) + 8  # padded like LLaVA-NeXT's 32064 rows, room for <video>
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=PATCH,
        projection_dim=32,
    )
    text = dict(
        model_type="llama",
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        _attn_implementation="flash_attention_2",
    )
    config = {
        "model_type": "llava",
        "architectures": ["PllavaForConditionalGeneration"],
        "vision_config": vision,
        "text_config": text,
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu",
        "pooling_method": "avg",
        "pooling_shape": [FRAMES, 2, 2],
        "frame_shape": [4, 4],
        "num_frames": FRAMES,
        "use_pooling": True,
        "vocab_size": vocab,
        "torch_dtype": "float32",
    }
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in vision.items() if k != "model_type"}))
    state = {f"vision_tower.vision_model.{k}": v for k, v in clip.state_dict().items()}  # transformers 4.40 names
    lm_config = LlamaConfig(**{k: v for k, v in text.items() if not k.startswith("_") and k != "model_type"})
    for key, value in LlamaForCausalLM(lm_config).state_dict().items():
        value = value.normal_(0.0, 0.08) if value.ndim == 2 else value
        state[f"language_model.{key}"] = value
    state["multi_modal_projector.linear_1.weight"] = torch.randn(64, 32) * 0.2
    state["multi_modal_projector.linear_1.bias"] = torch.randn(64) * 0.1
    state["multi_modal_projector.linear_2.weight"] = torch.randn(64, 64) * 0.2
    state["multi_modal_projector.linear_2.bias"] = torch.randn(64) * 0.1
    state["vision_tower.vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # an old saved buffer
    if lora:  # an LM still wrapped by PEFT, as during training
        wrapped = {}
        for key, value in state.items():
            if key.startswith("language_model."):
                key = "language_model.base_model.model." + key[len("language_model.") :]
                if key.endswith(("q_proj.weight", "v_proj.weight")):
                    module = key[: -len(".weight")]
                    wrapped[f"{module}.base_layer.weight"] = value
                    wrapped[f"{module}.lora_A.default.weight"] = torch.randn(LORA_RANK, value.shape[1]) * 0.1
                    wrapped[f"{module}.lora_B.default.weight"] = torch.randn(value.shape[0], LORA_RANK) * 0.1
                    continue
            wrapped[key] = value
        state = wrapped
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    keys = sorted(state)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for i, name in enumerate(names):
        part = {k: state[k].contiguous() for k in keys[i::shards]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    tokenizer.save_pretrained(folder)
    return state


def pllava_video_tokens(state: dict, pixel_values_videos: torch.Tensor) -> torch.Tensor:
    """PLLaVA's video path, written from its description: CLIP layer -2 without CLS, projector, 3-D avg pool."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE,
            patch_size=PATCH,
        )
    ).eval()
    prefix = "vision_tower.vision_model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and not k.endswith("position_ids")}
    missing, unexpected = tower.load_state_dict(weights, strict=False)
    assert not missing and not unexpected
    frames = pixel_values_videos[0]
    with torch.no_grad():
        patches = tower(frames, output_hidden_states=True).hidden_states[-2][:, 1:]  # (T, 16, 32)
        linear_1 = state["multi_modal_projector.linear_1.weight"], state["multi_modal_projector.linear_1.bias"]
        linear_2 = state["multi_modal_projector.linear_2.weight"], state["multi_modal_projector.linear_2.bias"]
        hidden = torch.nn.functional.gelu(patches @ linear_1[0].T + linear_1[1]) @ linear_2[0].T + linear_2[1]
        side = IMAGE // PATCH
        video = hidden.reshape(FRAMES, side, side, -1).permute(3, 0, 1, 2)[None]  # (1, C, T, H, W)
        pooled = torch.nn.AdaptiveAvgPool3d((FRAMES, side // 2, side // 2))(video)
        return pooled[0].permute(1, 2, 3, 0).reshape(-1, hidden.shape[-1])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("pllava")
    state = pllava_source(root / "src")
    assert main([str(root / "src"), str(root / "dst")]) == 0
    return state, root / "dst"


@pytest.fixture(scope="module")
def vllm(converted):
    return load_videollm(converted[1], quant="fp32")


def test_weights_are_renamed_not_changed(converted):
    state, dst = converted
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    out = {}
    for name in sorted(set(index["weight_map"].values())):
        out.update(load_file(str(dst / name)))
    assert torch.equal(
        out["model.multi_modal_projector.linear_1.weight"], state["multi_modal_projector.linear_1.weight"]
    )
    assert torch.equal(
        out["model.language_model.layers.2.mlp.down_proj.weight"],
        state["language_model.model.layers.2.mlp.down_proj.weight"],
    )
    assert torch.equal(out["lm_head.weight"], state["language_model.lm_head.weight"])
    assert torch.equal(
        out["model.vision_tower.embeddings.patch_embedding.weight"],
        state["vision_tower.vision_model.embeddings.patch_embedding.weight"],
    )
    assert not out["model.image_newline"].any()
    assert not any(k.endswith("position_ids") for k in out)
    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "llava_next_video" and config["pllava"]["pooling_shape"] == [FRAMES, 2, 2]


def test_loads_as_llava_next_video_with_pllava_video_path(converted, vllm):
    from transformers import LlavaNextVideoForConditionalGeneration

    state, dst = converted
    _, info = LlavaNextVideoForConditionalGeneration.from_pretrained(dst, output_loading_info=True)
    assert not any(info.values()), info  # every weight found, none left over
    assert isinstance(vllm.model, LlavaNextVideoForConditionalGeneration)
    assert isinstance(vllm.adapter, PllavaVideoAdapter) and vllm.adapter.num_frames == FRAMES
    prepared = vllm.prepare(random_frames(FRAMES, 48, 64), QUESTION, OPTIONS, answer=1)
    pixels = prepared.inputs["pixel_values_videos"]
    assert pixels.shape[1:] == (FRAMES, 3, IMAGE, IMAGE)
    with torch.inference_mode():
        ours = vllm.model.get_video_features(pixel_values_videos=pixels).pooler_output[0]
    reference = pllava_video_tokens(state, pixels)
    assert torch.allclose(ours, reference, atol=1e-5)
    # transformers' own order (pool, then project) would give other tokens: the GELU does not commute
    from transformers.models.llava_next_video.modeling_llava_next_video import LlavaNextVideoModel

    with torch.inference_mode():
        stock = LlavaNextVideoModel.get_video_features(vllm.model.model, pixel_values_videos=pixels)
    assert not torch.allclose(stock.pooler_output[0], reference, atol=1e-3)

    spans = prepared.spans
    assert [e - s for s, e in spans.frame_spans] == [4] * FRAMES and spans.num_video_tokens == ours.shape[0]
    assert prepared.prompt_text.startswith("Carefully watch the video")
    assert " USER: <video>\n USER: Question: " + QUESTION in prepared.prompt_text
    assert prepared.prompt_text.endswith("Only give the best option. ASSISTANT:Best option:(")
    decode = vllm.tokenizer.decode
    ids = prepared.inputs["input_ids"][0]
    assert decode(ids[slice(*spans.question_text)]).strip() == QUESTION
    assert decode(ids[slice(*spans.option_spans[3])]).strip() == "(D) down"


def test_prompt_is_the_papers_character_for_character(vllm):
    # the paper's eval_mvbench conversation, written out by hand; the only difference is the
    # placeholder: <video> (transformers' LLaVA-NeXT-Video class) where the paper's code has <image>
    paper = (
        "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
        "movement of objects, and the action and pose of persons. Based on your observations, select the best "
        "option that accurately addresses the question.\n"
        " USER: <video>\n"
        " USER: Question: Which way does the red square move?\n"
        "Options:\n"
        "(A) left\n"
        "(B) right\n"
        "(C) up\n"
        "(D) down"
        " \nOnly give the best option."
        " ASSISTANT:Best option:("
    )
    prepared = vllm.prepare(random_frames(FRAMES), QUESTION, OPTIONS, answer=1)
    assert prepared.prompt_text == paper
    # the question span is the paper's: from the "Question:" header through the last option
    spans, ids = prepared.spans, prepared.inputs["input_ids"][0]
    text = vllm.tokenizer.decode(ids[slice(*spans.question)]).strip()
    assert text == "Question: Which way does the red square move?\nOptions:\n(A) left\n(B) right\n(C) up\n(D) down"
    assert spans.question[0] < spans.question_text[0]
    after = vllm.tokenizer.decode(ids[spans.question[1] : spans.last])
    assert after.strip() == "Only give the best option. ASSISTANT:Best option:"


def test_converted_model_runs_knockout_and_nf4(converted, vllm):
    prepared = vllm.prepare(random_frames(FRAMES), QUESTION, OPTIONS)
    base = vllm.last_logits(prepared)
    with torch.inference_mode():
        assert torch.equal(base, vllm.model(**prepared.inputs, logits_to_keep=1).logits[0, -1])
    assert not torch.equal(base, vllm.last_logits(prepared, KnockoutSpec.single("video->question", LayerWindow(1))))
    nf4 = load_videollm(converted[1])
    assert torch.isfinite(nf4.last_logits(nf4.prepare(random_frames(FRAMES), QUESTION, OPTIONS))).all()


def test_frame_count_must_match_pooling(vllm):
    with pytest.raises(Exception, match=f"pass exactly {FRAMES} frames"):
        vllm.prepare(random_frames(FRAMES + 1), QUESTION, OPTIONS)


def test_lora_is_merged_with_alpha(tmp_path):
    state = pllava_source(tmp_path / "src", lora=True, shards=1)
    with pytest.raises(ConversionError, match="--lora-alpha"):
        convert_pllava(tmp_path / "src", tmp_path / "dst")
    dst = convert_pllava(tmp_path / "src", tmp_path / "dst", lora_alpha=LORA_ALPHA)
    out = load_file(str(dst / "model.safetensors"))
    module = "language_model.base_model.model.model.layers.1.self_attn.q_proj"
    a, b = state[f"{module}.lora_A.default.weight"], state[f"{module}.lora_B.default.weight"]
    expected = state[f"{module}.base_layer.weight"] + (LORA_ALPHA / LORA_RANK) * (b @ a)
    assert torch.allclose(out["model.language_model.layers.1.self_attn.q_proj.weight"], expected, atol=1e-6)
    assert not any("lora" in k or "base_layer" in k for k in out)
    with pytest.raises(ConversionError, match="not empty"):
        convert_pllava(tmp_path / "src", tmp_path / "dst", lora_alpha=LORA_ALPHA)


def test_unconvertible_sources_say_why(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "dst")]) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llava",
                "vision_config": {"image_size": 336, "patch_size": 14},
                "text_config": {"vocab_size": 32064},
                "pooling_shape": [16, 8, 8],
                "frame_shape": [24, 24],
            }
        )
    )
    with pytest.raises(ConversionError, match="pools with stride 2"):
        convert_pllava(tmp_path / "odd", tmp_path / "dst")


def test_unconverted_pllava_folder_points_to_converter(tmp_path):
    from flowkit import UnsupportedModelError

    pllava_source(tmp_path / "src", shards=1)
    with pytest.raises(UnsupportedModelError, match="python -m flowkit.convert.pllava"):
        load_videollm(tmp_path / "src")
