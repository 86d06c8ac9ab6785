"""Version 3 layouts of the kit's model: interpolated position embeddings, a warm start across layouts."""

from __future__ import annotations

import pytest
import torch

from flowkit.smol_video.assembly import (
    LAYOUTS,
    SHIPPED_LAYOUT,
    V3_LAYOUT,
    Layout,
    adapt_to_layout,
    interpolate_position_embeddings,
    layout_named,
    layout_of,
    shipped_dir,
    vision_config_kwargs,
)
from flowkit.smol_video.training.trainer import export_delta, load_trainable_state, train

from conftest import tiny_train_config


def test_layouts_count_their_tokens_and_refuse_what_the_processor_cannot_write():
    assert SHIPPED_LAYOUT.tokens_per_frame == 4 and V3_LAYOUT.tokens_per_frame == 16
    assert {n: layout.frame_size for n, layout in LAYOUTS.items()} == {4: 32, 9: 48, 16: 64, 36: 96, 64: 128}
    assert all(layout.tokens_per_frame == n for n, layout in LAYOUTS.items())
    assert layout_named("16") == layout_named("64x64") == V3_LAYOUT and layout_named(None) == SHIPPED_LAYOUT
    with pytest.raises(ValueError, match="stride 2"):
        Layout(frame_size=32, pool_stride=1)
    with pytest.raises(ValueError, match="unknown layout"):
        layout_named("17")


def shipped_vision_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    delta = load_file(shipped_dir() / "delta.safetensors")
    prefix = "model.vision_tower."
    return {k[len(prefix) :]: v.float() for k, v in delta.items() if k.startswith(prefix)}


def vision_tower(layout: Layout, state: dict[str, torch.Tensor]):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    model = CLIPVisionModel(CLIPVisionConfig(**vision_config_kwargs(layout))).eval()
    model.load_state_dict(adapt_to_layout(state, layout), strict=True)
    return model


def test_interpolated_tower_at_the_old_size_is_the_shipped_tower_exactly():
    state = shipped_vision_state()
    key = "embeddings.position_embedding.weight"
    assert state[key].shape == (17, 256) and layout_of(state) == SHIPPED_LAYOUT
    assert torch.equal(interpolate_position_embeddings(state[key], 4), state[key])
    assert torch.equal(adapt_to_layout(state, SHIPPED_LAYOUT)[key], state[key])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    from transformers import CLIPVisionConfig, CLIPVisionModel

    plain = CLIPVisionModel(CLIPVisionConfig(**vision_config_kwargs())).eval()
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(
            vision_tower(SHIPPED_LAYOUT, state)(pixels).last_hidden_state, plain(pixels).last_hidden_state
        )


def test_interpolation_to_the_v3_grid_is_bicubic_and_keeps_the_class_position():
    state = shipped_vision_state()
    weight = state["embeddings.position_embedding.weight"]
    grown = interpolate_position_embeddings(weight, 8)
    assert grown.shape == (65, 256) and torch.equal(grown[0], weight[0])
    # bicubic at twice the size: a constant grid stays constant, and the grown grid keeps the old scale
    flat = torch.ones(17, 3)
    assert torch.allclose(interpolate_position_embeddings(flat, 8), torch.ones(65, 3))
    assert abs(float(grown[1:].mean()) - float(weight[1:].mean())) < 0.05 * float(weight[1:].abs().mean())
    tower = vision_tower(V3_LAYOUT, state)
    with torch.no_grad():
        out = tower(torch.randn(1, 3, 64, 64)).last_hidden_state
    assert out.shape == (1, 65, 256) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def toy_v3_checkpoint(tmp_path_factory):
    """The toy checkpoint's architecture at the v3 layout (64x64 frames: 16 tokens per frame)."""
    from flowkit.testing.tiny_models import build_toy_llava_next_video

    return build_toy_llava_next_video(tmp_path_factory.mktemp("ckpt-v3") / "toy-v3", seed=0, frame_size=64)


def config(base, **kw):
    return tiny_train_config(base, **{"stage": "video", "supervision": "dense", **kw})


def test_a_v3_run_warm_starts_from_the_shipped_layout_resumes_and_runs_a_forward(
    toy_checkpoint, toy_v3_checkpoint, tmp_path
):
    from transformers import AutoProcessor, LlavaNextVideoForConditionalGeneration

    from flowkit.families.llava_next_video import LlavaNextVideoAdapter
    from flowkit.smol_video import merge_lora_delta

    old = tmp_path / "old"
    train(config(toy_checkpoint, steps=1), old, progress=False)
    start = load_trainable_state(old)
    key = "model.model.vision_tower.embeddings.position_embedding.weight"
    assert start[key].shape[0] == 17

    v3 = tmp_path / "v3"
    cfg = lambda: config(toy_v3_checkpoint, init_from=str(old), layout="16")  # noqa: E731
    train(cfg(), v3, progress=False, stop_after=1)
    assert torch.load(v3 / "checkpoint.pt", weights_only=False)["step"] == 1
    train(cfg(), v3, progress=False)  # resumes to the end of its schedule
    assert torch.load(v3 / "checkpoint.pt", weights_only=False)["step"] == 2
    trained = load_trainable_state(v3)
    assert trained[key].shape[0] == 65
    # LoRA factors and projector carried over (same keys, same shapes)
    carried = [k for k in start if "lora_" in k or "multi_modal_projector" in k]
    assert carried and all(trained[k].shape == start[k].shape for k in carried)
    with pytest.raises(ValueError, match="layout"):
        train(config(toy_v3_checkpoint, init_from=str(old), layout="4"), v3, progress=False)
    with pytest.raises(ValueError, match="same layout"):
        train(config(toy_v3_checkpoint, init_from=str(old), steps=3), v3, progress=False)

    # the exported delta, merged into the v3 architecture, runs a forward on a 16-token-per-frame prompt
    delta = export_delta(v3)
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(toy_v3_checkpoint, dtype=torch.float32).eval()
    state = model.state_dict()
    merged = merge_lora_delta(delta, state)
    with torch.no_grad():
        for name, value in merged.items():
            state[name].copy_(value)
    processor = AutoProcessor.from_pretrained(toy_v3_checkpoint)
    from flowkit.data import shipped_questions

    sample = shipped_questions()[0]
    prepared = LlavaNextVideoAdapter().prepare(processor, sample.frames, sample.question, sample.candidates)
    assert prepared.spans.num_video_tokens == 8 * 16
    with torch.no_grad():
        logits = model(**prepared.inputs).logits
    assert logits.shape[1] == prepared.spans.seq_len and torch.isfinite(logits).all()


def test_a_warm_start_from_another_layout_must_name_its_layout():
    from flowkit.smol_video.training.trainer import TrainConfig, check_init_layout

    def state(grid):  # a vision tower's position and patch embeddings for a grid x grid frame of 8x8 patches
        return {
            "model.model.vision_tower.embeddings.position_embedding.weight": torch.zeros(grid * grid + 1, 4),
            "model.model.vision_tower.embeddings.patch_embedding.weight": torch.zeros(4, 3, 8, 8),
        }

    with pytest.raises(ValueError, match="give --layout 16 to keep its layout"):
        check_init_layout(TrainConfig(init_from="v3.safetensors"), state(8))
    check_init_layout(TrainConfig(init_from="v3.safetensors", layout="16"), state(8))  # named: fine
    check_init_layout(TrainConfig(init_from="v2.safetensors"), state(4))  # the shipped layout: fine
    check_init_layout(TrainConfig(), {})


@pytest.mark.slow
def test_the_shipped_delta_assembles_into_a_v3_checkpoint(tmp_path):
    """The real assembly (SmolLM2 + the shipped delta, interpolated) at 16 tokens per frame."""
    from safetensors.torch import load_file
    from transformers import AutoProcessor, LlavaNextVideoForConditionalGeneration

    from flowkit.smol_video import assemble

    folder = assemble(tmp_path / "v3", delta=load_file(shipped_dir() / "delta.safetensors"), layout=V3_LAYOUT)
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    assert model.config.vision_config.image_size == 64
    assert AutoProcessor.from_pretrained(folder).video_processor.size["shortest_edge"] == 64
