"""Recipe B (dense supervision): scene records, captions, multi-turn labels, a tiny training run, the A/B driver."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from flowkit.data import TASKS, uniform_frame_indices
from flowkit.data.render import SHAPE_PLURALS
from flowkit.data.synthetic import make_sample, make_scene_sample
from flowkit.smol_video.training import captions
from flowkit.smol_video.training.dense import (
    CAPTION,
    IGNORE,
    LETTER,
    Conversation,
    Turn,
    answer_turn,
    caption_turn,
    conversation_batch,
    encode_conversation,
)
from flowkit.smol_video.training.encoding import collate_conversations
from flowkit.smol_video.training.trainer import TrainConfig, batch_samples, train

from conftest import tiny_train_config


def config(toy_checkpoint, **kw):
    return tiny_train_config(toy_checkpoint, **kw)


@pytest.fixture(scope="module")
def processor(toy_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(toy_checkpoint)


def model_view(task, seed):
    """A bench clip and its scene at the 8 frames the model sees."""
    sample, scene = make_scene_sample(task, np.random.default_rng([seed, 99]))
    index = uniform_frame_indices(16, 8)
    return sample, scene.at_frames(index), index


@pytest.mark.parametrize("task", TASKS)
def test_scene_record_redraws_the_clip_and_leaves_samples_unchanged(task):
    for seed in range(8):
        plain = make_sample(task, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        sample, scene = make_scene_sample(task, rng)
        assert np.array_equal(plain.frames, sample.frames)
        assert (plain.question, plain.candidates, plain.answer) == (sample.question, sample.candidates, sample.answer)
        assert np.array_equal(scene.render(), sample.frames)  # the record is exact, reversal included
        index = uniform_frame_indices(16, 8)
        assert np.array_equal(scene.at_frames(index).render(), sample.frames[index])


def _target(scene):
    return next(o for o in scene.objects if o.role == "target")


@pytest.mark.parametrize("task", TASKS)
def test_clip_captions_state_the_facts_of_each_task(task):
    for seed in range(25):
        sample, scene, _ = model_view(task, seed)
        caption = captions.clip_caption(scene).lower()
        answer = sample.answer_text
        if task == "moving_direction":
            assert f"the {_target(scene).name} moves {answer}" in caption
        elif task == "object_count":
            plural = sample.question.split()[2]  # "How many squares appear ..."
            shape = next(s for s, p in SHAPE_PLURALS.items() if p == plural)
            assert re.search(rf"in all, (.+ )?{answer} {shape if answer == 'one' else plural}\b", caption), caption
            count = ("one", "two", "three", "four").index(answer) + 1
            # the first one is there at the start, the others appear later
            assert len(re.findall(rf"(a|the) \w+ {shape} appears", caption)) == count - 1
        elif task == "action_sequence":
            earlier = any(w in sample.question for w in ("first", "before"))
            first, last = (answer, next(c for c in sample.candidates if c != answer))
            if not earlier:
                first, last = last, first
            assert f"{first} moves first and {last} moves last" in caption
            assert caption.index(f"{first} moves ") < caption.index(f"{last} moves ")  # told in order
        elif task == "scene_transition":
            assert f"the scene changes {answer}" in caption
            start = answer.split()[1]
            assert captions.SCENE_PHRASES[start] in caption.split(".")[0]
        elif task == "action_antonym":
            name = _target(scene).name
            if answer in ("appears", "disappears"):
                assert re.search(rf"(a|the) {name} {answer}", caption), caption
            elif answer in ("grows", "shrinks"):
                assert f"the {name} {answer}" in caption
            else:
                assert f"the {name} moves" in caption and f"it {answer}" in caption
        elif task == "object_shuffle":
            assert f"at the end the ball is under the {answer} cup" in caption
            swaps = len(scene.cup_swaps)
            assert caption.count("swap places") == swaps
        assert all(word not in caption for word in ("none", "nan", "[", "_"))


def test_frame_captions_name_every_object_and_place():
    from flowkit.smol_video.training.frames import FRAME_TASKS, make_frame

    rng = np.random.default_rng(3)
    for task in FRAME_TASKS:
        sample, words = make_frame(task, rng)
        caption = captions.frame_caption(words)
        objects = [w for w in words if len(w) >= 2]
        assert f"{captions.count_phrase(len(objects), 'object', 'objects')}" in caption
        for quadrant, w in zip(captions.QUADRANTS, words):
            if len(w) >= 2:
                assert f"{'large ' if 'large' in w else ''}{w[0]} {w[1]} at the {quadrant}" in caption
        if task == "scene":
            assert captions.SCENE_PHRASES[sample.answer_text] in caption
    _, scene, _ = model_view("scene_transition", 0)
    assert captions.SCENE_PHRASES[scene.backgrounds[0]] in captions.scene_frame_caption(scene, 0)


@pytest.mark.parametrize("task", TASKS)
def test_extra_questions_are_about_other_facts_and_answer_true(task):
    for seed in range(10):
        sample, scene, _ = model_view(task, seed)
        pool = captions.clip_questions(scene, np.random.default_rng(seed))
        assert pool, f"no extra question for a {task} clip"
        excluded = captions.primary_facts(scene)
        assert all(q.fact not in excluded and q.question != sample.question for q in pool)
        for q in pool:
            if q.fact[0] == "direction":  # check against the track itself
                obj = next(o for o in scene.objects if o.name == q.fact[1])
                dx, dy = obj.cx[-1] - obj.cx[0], obj.cy[-1] - obj.cy[0]
                expected = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
                assert q.answer == expected
        picked = captions.pick_questions(pool, 2, np.random.default_rng(0))
        assert len({q.fact for q in picked}) == len(picked) == min(2, len({q.fact for q in pool}))


def test_conversation_labels_cover_replies_only_and_the_first_turn_is_the_eval_prompt(processor):
    from flowkit.families.llava_next_video import LlavaNextVideoAdapter

    cfg = TrainConfig(
        stage="video", supervision="dense", batch_size=3, frame_batch_every=2, video_tasks=TASKS, questions_per_clip=3
    )
    for step in (1, 2):  # a clip batch, then a single-frame batch
        for conversation in conversation_batch(cfg, step):
            kinds = [t.kind for t in conversation.turns]
            assert kinds[0] == "answer" and kinds[-1] == "caption" and "caption" not in kinds[:-1]
            encoded = encode_conversation(processor, conversation)
            ids, labels, token_kinds = encoded["input_ids"], encoded["labels"], encoded["kinds"]
            video_start, video_end = encoded["video_span"]
            assert (labels[:video_end] == IGNORE).all()  # nothing at or before the video
            # the first turn is exactly what evaluation feeds, and its next token is the answer letter
            first = conversation.turns[0]
            sample_like = LlavaNextVideoAdapter().prepare(processor, conversation.frames, *_question_of(first))
            prompt_ids = sample_like.inputs["input_ids"][0]
            assert torch.equal(ids[: len(prompt_ids)], prompt_ids)
            assert (labels[: len(prompt_ids)] == IGNORE).all()
            assert int(labels[len(prompt_ids)]) == sample_like.letter_ids[first.answer_index]
            # supervised text is the replies (minus "Best option:(") and their end-of-turn tokens, nothing else
            supervised = processor.tokenizer.decode(ids[labels != IGNORE])
            expected = "".join(t.reply[t.supervised_from :] + "<|im_end|>" for t in conversation.turns)
            assert supervised == expected
            assert int((token_kinds == LETTER).sum()) == len(conversation.turns) - 1
            # every caption token comes after every answer token
            assert (token_kinds == CAPTION).nonzero().min() > (token_kinds == LETTER).nonzero().max()
            assert [p for p, _, _ in encoded["letters"]] == (token_kinds == LETTER).nonzero().flatten().tolist()


def _question_of(turn):
    lines = turn.user.split("\n")
    options = [line.split(") ", 1)[1] for line in lines[2:-1]]
    return lines[0], options, turn.answer_index


def test_a_caption_before_a_question_is_refused():
    frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    question = answer_turn("Which way?", ["left", "right"], 1)
    caption = caption_turn("Describe what happens in the video.", "Something moves.")
    Conversation("t", frames, (question, question, caption))
    with pytest.raises(ValueError, match="caption"):
        Conversation("t", frames, (question, caption, question))
    with pytest.raises(ValueError, match="starts with a question"):
        Conversation("t", frames, (caption,))
    assert isinstance(question, Turn) and question.reply == "Best option:(B) right"


def test_dense_batches_hold_the_letters_recipes_clips_and_questions(toy_checkpoint):
    letters = TrainConfig(stage="video", batch_size=4, frame_batch_every=3, video_tasks=TASKS)
    dense = TrainConfig(stage="video", batch_size=4, frame_batch_every=3, video_tasks=TASKS, supervision="dense")
    for step in (0, 1, 2):
        a, b = batch_samples(letters, step), conversation_batch(dense, step)
        for sample, conversation in zip(a, b):
            assert np.array_equal(sample.frames, conversation.frames)
            assert conversation.turns[0] == answer_turn(sample.question, sample.candidates, sample.answer_index)
    assert conversation_batch(dense, 1)[0].turns == conversation_batch(dense, 1)[0].turns  # pure in (seed, step)


def test_config_checks_for_dense_and_eval_seed():
    with pytest.raises(ValueError, match="unknown supervision"):
        TrainConfig(supervision="captions")
    with pytest.raises(ValueError, match="stage 0"):
        TrainConfig(stage="embed", supervision="dense")
    with pytest.raises(ValueError, match="eval_seed"):
        TrainConfig(eval_seed=1234)
    with pytest.raises(ValueError, match="eval_seed"):
        TrainConfig(seed=5, eval_seed=5)


def test_dense_training_runs_logs_and_resumes_on_a_tiny_model(toy_checkpoint, tmp_path, processor):
    run = tmp_path / "dense"
    cfg = config(toy_checkpoint, stage="video", supervision="dense", frame_batch_every=2, eval_seed=4321)
    result = train(cfg, run, progress=False)
    assert set(result) == {"scene_transition", "frame_colour"}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in log)
    assert {"letter", "answer_text", "caption", "bench_letter"} <= set(log[0]["loss_parts"])  # step 1: clips
    assert {"letter", "caption"} <= set(log[1]["loss_parts"])  # step 2: single frames
    assert log[-1]["clips"] == 2 and log[-1]["frames"] == 2 and log[-1]["train_seconds"] > 0
    assert log[-1]["seconds_per_step"] > 0 and log[-1]["samples_per_second"] > 0
    train(
        config(toy_checkpoint, stage="video", supervision="dense", frame_batch_every=2, eval_seed=4321, steps=3),
        run,
        progress=False,
    )
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
    with pytest.raises(ValueError, match="supervision"):
        train(config(toy_checkpoint, stage="video", steps=4), run, progress=False)
    # a stage-1 (single-frame) dense run, no captions: questions only
    align = config(toy_checkpoint, stage="align", supervision="dense", captions=False, eval_seed=4321)
    train(align, tmp_path / "align", progress=False)


def test_dense_loss_ignores_the_video_and_user_turns(toy_checkpoint, processor):
    """Changing the labels outside the replies changes nothing; the gradient reaches the vision side."""
    from flowkit.smol_video.training.dense import dense_loss
    from flowkit.smol_video.training.trainer import build

    trainable, _ = build(config(toy_checkpoint, stage="video", supervision="dense"))
    trainable.eval()
    cfg = TrainConfig(
        stage="video",
        supervision="dense",
        batch_size=2,
        frame_batch_every=0,
        video_tasks=("object_shuffle", "action_antonym"),
    )
    batch = collate_conversations(processor, conversation_batch(cfg, 0))
    loss, parts = dense_loss(trainable, batch)
    loss.backward()
    grad = trainable.model.model.vision_tower.embeddings.patch_embedding.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert np.isfinite(float(loss.detach())) and parts["bench_letter"] > 0
    # the evaluation path reads the same letter distribution as the first turn of the conversation
    with torch.no_grad():
        out = trainable.model.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values_videos=batch["pixel_values_videos"],
        ).last_hidden_state
        first_letter = batch["letters"][0][0][0]
        prompt_only = {
            k: v[:1, :first_letter] if k in ("input_ids", "attention_mask") else v[:1]
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "pixel_values_videos")
        }
        alone = trainable.last_logits(prompt_only)
        assert torch.allclose(trainable.model.lm_head(out[0, first_letter - 1]), alone[0], atol=1e-4)


def test_ab_driver_runs_both_arms_and_writes_curves(toy_checkpoint, tmp_path):
    from flowkit.smol_video.training.ab import main

    root = tmp_path / "ab"
    args = [
        str(root),
        "--base",
        str(toy_checkpoint),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--eval-every",
        "2",
        "--tasks",
        "scene_transition",
        "--frame-tasks",
        "colour",
        "--eval-frame-per-task",
        "1",
        "--lora-rank",
        "2",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader((root / "curves.csv").open()))
    assert {r["arm"] for r in rows} == {"A", "B"}
    assert {r["task"] for r in rows} == {"scene_transition", "frame_colour", "mean_bench"}
    assert {(r["arm"], r["step"]) for r in rows} == {(arm, step) for arm in "AB" for step in ("0", "2")}
    assert (root / "init_eval.json").exists()  # step 0: the shared starting weights, evaluated once
    summary = json.loads((root / "summary.json").read_text())
    for arm in ("A", "B"):
        assert summary["arms"][arm]["clips"] == 2 and summary["arms"][arm]["frames"] == 2
        assert summary["arms"][arm]["seconds_per_step"] > 0
    config_a = json.loads((root / "A" / "config.json").read_text())
    config_b = json.loads((root / "B" / "config.json").read_text())
    assert config_a["supervision"] == "letters" and config_b["supervision"] == "dense"
    assert config_a["eval_seed"] == config_b["eval_seed"] == 4321 and config_a["eval_per_task"] == 64
    with pytest.raises(SystemExit):  # the arms cannot drift apart: other shared settings are refused
        main(args[:4] + ["3"] + args[5:])
    with pytest.raises(SystemExit):
        main([str(tmp_path / "other"), "--eval-seed", "1234"])


@pytest.mark.slow
def test_dense_step_on_the_real_smol_video_model(tmp_path):
    """One dense step of the real SmolLM2 assembly (loads its weights)."""
    torch.set_num_threads(1)
    cfg = TrainConfig(
        stage="video",
        supervision="dense",
        steps=1,
        batch_size=2,
        log_every=1,
        eval_every=1,
        eval_per_task=1,
        video_tasks=("object_shuffle",),
        frame_tasks=("colour",),
        eval_seed=4321,
    )
    train(cfg, tmp_path / "run", progress=False)
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(log["loss"]) and log["loss_parts"]["caption"] < 10
