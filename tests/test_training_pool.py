"""Fast dense batches: the encoder equals the reference encoding; the pre-rendered training pool."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowkit.data import TASKS, uniform_frame_indices
from flowkit.data.synthetic import EVAL_SEED, generate
from flowkit.smol_video.training.dense import LETTER, conversation_batch, encode_conversation
from flowkit.smol_video.training.encoding import collate_conversations
from flowkit.smol_video.training.encoding import ConversationEncoder
from flowkit.smol_video.training.frames import FRAME_TASKS
from flowkit.smol_video.training.pool import (
    PoolError,
    PoolSpec,
    build_pool,
    entry_conversation,
    open_pool,
    pool_batch,
    pool_entries,
)
from flowkit.smol_video.training.trainer import TrainConfig, step_batch, train

from conftest import tiny_train_config


def config(toy_checkpoint, **kw):
    every_task = {"video_tasks": TASKS, "frame_tasks": FRAME_TASKS}  # the pool's tests draw from every task
    return tiny_train_config(
        toy_checkpoint,
        **{"batch_size": 4, "stage": "video", "supervision": "dense", "frame_batch_every": 2, **every_task, **kw},
    )


@pytest.fixture(scope="module")
def processor(toy_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(toy_checkpoint)


@pytest.fixture(scope="module")
def processor64():
    """A v3 candidate: 64x64 input, 8x8 patches, stride-2 pooling (16 video tokens per frame)."""
    from flowkit.model.checkpoints import CHATML_VIDEO_TEMPLATE, llava_next_video_processor
    from flowkit.smol_video.smollm2 import video_tokenizer

    return llava_next_video_processor(video_tokenizer(), 64, 8, CHATML_VIDEO_TEMPLATE)


def assert_same_batch(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory, processor):
    folder = tmp_path_factory.mktemp("pool") / "pool"
    build_pool(
        folder,
        processor,
        seed=5,
        clips_per_task=5,
        frames_per_task=3,
        shard_size=2,
        video_tasks=("scene_transition", "action_antonym"),
        frame_tasks=("colour", "count"),
    )
    return folder


def pool_config(toy_checkpoint, pool_dir, **kw):
    cfg = config(
        toy_checkpoint,
        pool=str(pool_dir),
        video_tasks=("scene_transition", "action_antonym"),
        frame_tasks=("colour", "count"),
        **kw,
    )
    return cfg


# ----------------------------------------------------------------------------- the fast encoder
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(questions_per_clip=1, captions=False),
        dict(video_tasks=("lone_moving_direction", "object_shuffle"), frame_tasks=("lone_side", "scene")),
    ],
)
def test_fast_collate_equals_the_reference_encoding(toy_checkpoint, processor, kw):
    cfg = config(toy_checkpoint, batch_size=6, **({"video_tasks": TASKS, "frame_tasks": FRAME_TASKS} | kw))
    for step in range(4):  # steps 0 and 2 are single-frame batches
        conversations = conversation_batch(cfg, step)
        assert_same_batch(
            collate_conversations(processor, conversations), collate_conversations(processor, conversations, fast=False)
        )


def test_fast_encoding_at_another_frame_size(processor64):
    """The encoding does not depend on the frame size; 64x64 frames get 16 video tokens each."""
    cfg = TrainConfig(stage="video", supervision="dense", batch_size=3, seed=2)
    for step in (1, 4):
        conversations = conversation_batch(cfg, step)
        fast = collate_conversations(processor64, conversations)
        assert_same_batch(fast, collate_conversations(processor64, conversations, fast=False))
        frames = conversations[0].frames.shape[0]
        first, end = fast["video_spans"][0]
        assert end - first == 16 * frames
        assert fast["pixel_values_videos"].shape[-2:] == (64, 64)


def test_encoder_refuses_what_the_reference_refuses(processor):
    from flowkit.smol_video.training.dense import Conversation, DenseSupervisionError, Turn

    sample_conv = conversation_batch(TrainConfig(stage="video", supervision="dense", batch_size=1), 1)[0]
    broken = Conversation(
        sample_conv.task,
        sample_conv.frames,
        (Turn(sample_conv.turns[0].user, "Best option:(Z) nothing", "answer", 0, 2),),
    )
    for encode in (lambda c: encode_conversation(processor, c), ConversationEncoder(processor).encode):
        with pytest.raises(DenseSupervisionError):
            encode(broken)


def test_the_trainer_builds_the_reference_batches(toy_checkpoint, processor):
    cfg = config(toy_checkpoint, video_tasks=TASKS, frame_tasks=FRAME_TASKS)
    for step in (1, 2):
        assert_same_batch(
            step_batch(cfg, processor, step),
            collate_conversations(processor, conversation_batch(cfg, step), fast=False),
        )


# ----------------------------------------------------------------------------- the pool
def test_pool_seeds_are_training_seeds_only(tmp_path, processor, toy_checkpoint, pool_dir):
    with pytest.raises(PoolError, match="evaluation split"):
        build_pool(tmp_path / "p", processor, seed=EVAL_SEED, clips_per_task=1)
    with pytest.raises(PoolError, match="evaluation split"):
        PoolSpec(seed=EVAL_SEED)
    assert not (tmp_path / "p").exists()
    # a pool whose seed is the run's --eval-seed would train on the evaluation clips
    with pytest.raises(PoolError, match="eval-seed"):
        open_pool(pool_dir).check_run(pool_config(toy_checkpoint, pool_dir, eval_seed=5), processor)
    # and its clips are none of the evaluation split's
    pool = open_pool(pool_dir)
    evaluation = [s.frames[uniform_frame_indices(16, 8)] for s in generate("scene_transition", 5, EVAL_SEED)]
    for i in range(5):
        _, frames, _, _ = pool.entry("clip", "scene_transition", i)
        assert not any(np.array_equal(frames, e) for e in evaluation)


def test_pool_entries_are_the_stored_conversations_and_compact(pool_dir, processor):
    pool = open_pool(pool_dir)
    encoder = ConversationEncoder(processor)
    for kind, task in (("clip", "scene_transition"), ("clip", "action_antonym"), ("frame", "count")):
        for i in range(3):
            conversation = entry_conversation(pool.spec, kind, task, i)
            encoded, frames, _, _ = pool.entry(kind, task, i)
            reference = encoder.encode(conversation)
            assert np.array_equal(encoded.ids, reference.ids) and np.array_equal(encoded.kinds, reference.kinds)
            assert (encoded.video_at, encoded.letters) == (reference.video_at, reference.letters)
            assert frames.dtype == np.uint8 and np.array_equal(frames, conversation.frames)
            # what a batch of it is: exactly the reference batch of that conversation
            assert_same_batch(
                encoder.collate([encoded], [frames]), collate_conversations(processor, [conversation], fast=False)
            )
    shard = next(pool_dir.glob("clip-*.npz"))
    assert shard.stat().st_size < 4000 * 2  # two clips of 8 x 64 x 64 x 3 bytes (196 KB raw) in a few KB


def test_pool_batches_are_a_pure_function_of_seed_and_step(toy_checkpoint, pool_dir, processor):
    from flowkit.smol_video.training import pool as pool_module

    cfg = pool_config(toy_checkpoint, pool_dir)
    first = [pool_batch(cfg, processor, s) for s in range(5)]
    pool_module._OPEN.clear()  # as a fresh process would
    again = [pool_batch(cfg, processor, s) for s in range(5)]
    for a, b in zip(first, again):
        assert_same_batch(a, b)
    assert first[0]["pixel_values_videos"].shape[1] == 1 and first[1]["pixel_values_videos"].shape[1] == 8
    assert pool_entries(pool_config(toy_checkpoint, pool_dir, seed=2), 1) != pool_entries(cfg, 1)  # the seed orders


def test_an_epoch_draws_every_entry_once_with_tasks_uniform(toy_checkpoint, pool_dir):
    cfg = pool_config(toy_checkpoint, pool_dir, batch_size=2, frame_batch_every=0)
    drawn = [row for step in range(5) for row in pool_entries(cfg, step)[1]]  # 2 tasks x 5 entries
    assert sorted((t, i) for t, i, _ in drawn) == [
        (t, i) for t in ("action_antonym", "scene_transition") for i in range(5)
    ]
    assert {e for _, _, e in drawn} == {0}
    later = [row for step in range(5, 10) for row in pool_entries(cfg, step)[1]]
    assert sorted((t, i) for t, i, _ in later) == sorted((t, i) for t, i, _ in drawn) and {e for *_, e in later} == {1}


def test_reused_entries_get_new_option_orders_and_keep_their_meaning(toy_checkpoint, pool_dir, processor):
    cfg = pool_config(toy_checkpoint, pool_dir, batch_size=2, frame_batch_every=0)
    pool = open_pool(pool_dir)
    tok = processor.tokenizer

    def epoch(steps):  # (task, entry) -> (batch, row)
        out = {}
        for step in steps:
            batch = pool_batch(cfg, processor, step)
            for row, (task, index, _) in enumerate(pool_entries(cfg, step)[1]):
                out[(task, index)] = (batch, row)
        return out

    first, second = epoch(range(5)), epoch(range(5, 10))  # 10 entries: epochs 0 and 1
    assert first.keys() == second.keys()
    changed = 0
    for (task, index), (batch0, row0) in first.items():
        _, _, shard, shard_row = pool.entry("clip", task, index)
        turns = shard.turns(shard_row)
        answers = [t["c"][t["a"]] for t in turns if "q" in t]
        batch1, row1 = second[(task, index)]
        for batch, r in ((batch0, row0), (batch1, row1)):
            text = " ".join(tok.decode(batch["input_ids"][r][batch["attention_mask"][r] == 1]).split())
            for t in turns:  # the same questions and caption
                assert " ".join((t.get("q") or t["t"]).split()) in text
            # each answer is still its answer's text, under the supervised letter
            assert len(batch["letters"][r]) == len(answers)
            for (position, letters, answer), answer_text in zip(batch["letters"][r], answers):
                assert batch["kinds"][r, position] == LETTER and batch["input_ids"][r, position] == letters[answer]
                assert tok.decode(batch["input_ids"][r, position + 1 : position + 40]).startswith(") " + answer_text)
        assert torch.equal(batch0["pixel_values_videos"][row0], batch1["pixel_values_videos"][row1])
        changed += int(batch0["letters"][row0] != batch1["letters"][row1])
    assert changed > 0


def test_building_resumes_grows_and_refuses_other_settings(tmp_path, processor):
    folder = tmp_path / "pool"
    kw = dict(seed=3, clips_per_task=3, frames_per_task=0, shard_size=2, video_tasks=("scene_transition",))
    build_pool(folder, processor, **kw)
    shards = sorted(folder.glob("*.npz"))
    assert [p.name for p in shards] == ["clip-scene_transition-00000.npz", "clip-scene_transition-00001.npz"]
    before = {p.name: p.read_bytes() for p in shards}
    shards[0].unlink()  # an interrupted build: the missing shard is rebuilt, byte for byte
    build_pool(folder, processor, **kw)
    assert {p.name: p.read_bytes() for p in sorted(folder.glob("*.npz"))} == before
    grown = build_pool(folder, processor, **{**kw, "clips_per_task": 5})
    assert grown.count("clip", "scene_transition") == 5
    assert (folder / "clip-scene_transition-00000.npz").read_bytes() == before["clip-scene_transition-00000.npz"]
    with pytest.raises(PoolError, match="other settings"):
        build_pool(folder, processor, **{**kw, "seed": 4})
    assert json.loads((folder / "pool.json").read_text())["seed"] == 3


def test_a_pool_of_other_settings_or_tokens_is_refused(toy_checkpoint, pool_dir, processor, processor64):
    pool = open_pool(pool_dir)
    with pytest.raises(PoolError, match="questions per clip"):
        pool.check_run(pool_config(toy_checkpoint, pool_dir, questions_per_clip=2), processor)
    pool.check_run(pool_config(toy_checkpoint, pool_dir), processor64)  # same tokenizer and template: fine
    other = type(processor64)(
        video_processor=processor64.video_processor,
        image_processor=processor64.image_processor,
        tokenizer=processor64.tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=processor64.chat_template.replace("<|im_start|>", "<|im_start|> "),
    )
    with pytest.raises(PoolError, match="another tokenizer"):
        pool.check_run(pool_config(toy_checkpoint, pool_dir), other)
    with pytest.raises(ValueError, match="dense"):
        pool_config(toy_checkpoint, pool_dir, supervision="letters")


def test_one_pool_serves_a_64_pixel_model(toy_checkpoint, pool_dir, processor64):
    batch = pool_batch(pool_config(toy_checkpoint, pool_dir), processor64, 1)
    first, end = batch["video_spans"][0]
    assert end - first == 8 * 16 and batch["pixel_values_videos"].shape[-2:] == (64, 64)


def test_training_from_a_pool_resumes_exactly_and_pins_the_pool_size(toy_checkpoint, pool_dir, tmp_path):
    from flowkit.smol_video.training.trainer import load_trainable_state

    cfg = lambda: pool_config(toy_checkpoint, pool_dir, steps=3, batch_size=2)  # noqa: E731
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(cfg(), whole, progress=False)
    train(cfg(), split, progress=False, stop_after=1)
    train(cfg(), split, progress=False)
    a, b = load_trainable_state(whole), load_trainable_state(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = torch.load(whole / "checkpoint.pt", weights_only=False)["config"]
    assert saved["pool"] == str(pool_dir) and saved["notes"]["pool_per_task"] == {"clip": 5, "frame": 3}


def test_worker_processes_build_the_same_pool_batches(toy_checkpoint, pool_dir, processor):
    from flowkit.smol_video.training.trainer import iter_batches

    cfg = pool_config(toy_checkpoint, pool_dir, workers=2)
    cfg.notes["pool_per_task"] = {"clip": 5, "frame": 3}
    for step, batch in zip(range(1, 4), iter_batches(cfg, processor, 1, 4)):
        assert_same_batch(batch, pool_batch(cfg, processor, step))
