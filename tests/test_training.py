"""The training code path on a tiny model: a few steps of every stage, resume, export, assembly merge."""

from __future__ import annotations

import json

import pytest
import torch

from flowkit.smol_video.training.trainer import TrainConfig, batch_samples, export_delta, train

from conftest import tiny_train_config


def config(toy_checkpoint, **kw):
    return tiny_train_config(toy_checkpoint, **kw)


def test_training_seed_must_not_be_the_eval_seed(toy_checkpoint):
    with pytest.raises(ValueError, match="evaluation split"):
        config(toy_checkpoint, seed=1234)


def test_batches_are_a_pure_function_of_seed_and_step(toy_checkpoint):
    cfg = config(toy_checkpoint, stage="video", frame_batch_every=2)
    a, b = batch_samples(cfg, 3), batch_samples(cfg, 3)
    assert [s.question for s in a] == [s.question for s in b]
    assert all((x.frames == y.frames).all() for x, y in zip(a, b))
    assert batch_samples(cfg, 2)[0].task.startswith("frame_")  # every 2nd batch is single-frame
    assert batch_samples(cfg, 3)[0].frames.shape[0] == 8


def test_embed_align_video_stages_run_resume_and_export(toy_checkpoint, tmp_path):
    from flowkit.smol_video import merge_lora_delta

    embed = tmp_path / "embed"
    result = train(config(toy_checkpoint, stage="embed", steps=2, batch_size=4), embed, progress=False)
    assert set(result) == {"frame_colour"}
    align = tmp_path / "align"
    train(config(toy_checkpoint, stage="align", init_from=str(embed)), align, progress=False)
    log = [json.loads(line) for line in (align / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and "eval" in log[-1] and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)

    video = tmp_path / "video"
    train(config(toy_checkpoint, stage="video", init_from=str(align)), video, progress=False)
    # resuming to 3 steps continues from the checkpoint at step 2
    train(config(toy_checkpoint, stage="video", init_from=str(align), steps=3), video, progress=False)
    assert torch.load(video / "checkpoint.pt", weights_only=False)["step"] == 3

    from flowkit.smol_video.training.trainer import load_trainable_state, save_snapshot

    snapshot = tmp_path / "snap.safetensors"
    save_snapshot(video, snapshot)
    original, restored = load_trainable_state(video), load_trainable_state(snapshot)
    assert original.keys() == restored.keys()
    assert all(torch.allclose(original[k].float(), restored[k].float(), atol=1e-2, rtol=1e-2) for k in original)
    train(config(toy_checkpoint, stage="video", init_from=str(snapshot), steps=1), tmp_path / "again", progress=False)

    delta = export_delta(video)
    assert any(k.startswith("lora::") for k in delta) and float(delta["lora::scale"]) == 8.0
    assert "model.multi_modal_projector.linear_2.weight" in delta
    from transformers import LlavaNextVideoForConditionalGeneration

    base = LlavaNextVideoForConditionalGeneration.from_pretrained(toy_checkpoint).state_dict()
    merged = merge_lora_delta(delta, base)
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    a = delta["lora::model.language_model.layers.0.self_attn.q_proj.lora_a"]
    b = delta["lora::model.language_model.layers.0.self_attn.q_proj.lora_b"]
    assert torch.allclose(merged[key], base[key] + 8.0 * b @ a)


def test_stop_after_then_resume_equals_one_uninterrupted_run(toy_checkpoint, tmp_path):
    from flowkit.smol_video.training.trainer import load_trainable_state

    whole, split = tmp_path / "whole", tmp_path / "split"
    train(config(toy_checkpoint, stage="align", steps=3), whole, progress=False)
    train(config(toy_checkpoint, stage="align", steps=3), split, progress=False, stop_after=1)
    assert torch.load(split / "checkpoint.pt", weights_only=False)["step"] == 1
    train(config(toy_checkpoint, stage="align", steps=3), split, progress=False)
    a, b = load_trainable_state(whole), load_trainable_state(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_position_frames_say_where_each_object_is():
    import numpy as np

    from flowkit.data.render import COLOUR_RGB, COLOURS, SCENES
    from flowkit.smol_video.training.stage0 import make_position_frame

    rng = np.random.default_rng(0)
    for _ in range(50):
        frame, quadrants = make_position_frame(rng, size=64)
        assert frame.shape == (1, 64, 64, 3)
        placed = [(words, xy) for words, xy in quadrants if xy is not None]
        assert 1 <= len(placed) <= 3
        for q, (words, xy) in enumerate(quadrants):
            if xy is None:
                assert words == ["nothing"] or (len(words) == 1 and words[0] in SCENES)
                continue
            x, y = xy
            assert q == int(y >= 0.5) * 2 + int(x >= 0.5)  # the token of the quadrant holding the centre
            assert words[0] in COLOURS
            assert tuple(frame[0, int(y * 64), int(x * 64)]) == COLOUR_RGB[words[0]]  # the centre is painted


def test_stage0_with_positions_keeps_the_adapters_it_starts_from(toy_checkpoint, tmp_path):
    from flowkit.smol_video.training.trainer import load_trainable_state

    align = tmp_path / "align"
    train(config(toy_checkpoint, stage="align"), align, progress=False)
    embed = tmp_path / "embed"
    train(
        config(toy_checkpoint, stage="embed", positions=True, steps=2, batch_size=4, init_from=str(align)),
        embed,
        progress=False,
    )
    before, after = load_trainable_state(align), load_trainable_state(embed)
    lora = [k for k in before if "lora_" in k]
    assert lora and all(torch.equal(before[k], after[k]) for k in lora)  # stage 0 never touches the LM
    vision = [k for k in before if "vision_tower" in k and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in vision)


def test_curriculum_tasks_ask_about_a_lone_object_and_answer_right():
    import numpy as np

    from flowkit.data.render import COLOUR_RGB
    from flowkit.smol_video.training.curriculum import make_curriculum_sample
    from flowkit.smol_video.training.trainer import batch_samples

    rng = np.random.default_rng(0)
    for _ in range(20):
        clip = make_curriculum_sample("lone_moving_direction", rng)
        colour = clip.question.split()[4]
        first = np.argwhere((clip.frames[0] == COLOUR_RGB[colour]).all(-1)).mean(0)
        last = np.argwhere((clip.frames[-1] == COLOUR_RGB[colour]).all(-1)).mean(0)
        dy, dx = last - first
        expected = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert clip.answer_text == expected and clip.candidates["ABCD".index(clip.answer)] == expected
        frame = make_curriculum_sample("lone_position", rng)
        colour = frame.question.split()[3]
        cy, cx = np.argwhere((frame.frames[0] == COLOUR_RGB[colour]).all(-1)).mean(0)
        assert frame.answer_text == f"{'bottom' if cy >= 32 else 'top'} {'right' if cx >= 32 else 'left'}"
        side = make_curriculum_sample("lone_side", rng)
        colour = side.question.split()[2]
        cx = np.argwhere((side.frames[0] == COLOUR_RGB[colour]).all(-1)).mean(0)[1]
        assert side.answer_text == ("right" if cx >= 32 else "left") and set(side.candidates) == {"left", "right"}
        height = make_curriculum_sample("lone_height", rng)
        colour = height.question.split()[2]
        cy = np.argwhere((height.frames[0] == COLOUR_RGB[colour]).all(-1)).mean(0)[0]
        assert height.answer_text == ("bottom" if cy >= 32 else "top")
        named = make_curriculum_sample("named_side", rng)
        colour = named.question.split()[2]
        painted = {c for c, rgb in COLOUR_RGB.items() if (named.frames[0] == rgb).all(-1).any()}
        assert colour in painted and len(painted) >= 2  # the named object and at least one other
        cx = np.argwhere((named.frames[0] == COLOUR_RGB[colour]).all(-1)).mean(0)[1]
        assert named.answer_text == ("right" if cx >= 32 else "left")
    with pytest.raises(ValueError, match="unknown curriculum task"):
        make_curriculum_sample("lone_count", rng)
    cfg = TrainConfig(
        stage="video", video_tasks=("lone_moving_direction",), frame_tasks=("lone_position",), frame_batch_every=2
    )
    assert {s.task for s in batch_samples(cfg, 1)} == {"lone_moving_direction"}
    assert {s.task for s in batch_samples(cfg, 2)} == {"lone_position"}


def test_unknown_task_names_fail_before_anything_is_written(tmp_path, capsys):
    from flowkit.smol_video.training.__main__ import main

    with pytest.raises(ValueError, match="unknown video task.*choose from: moving_direction"):
        TrainConfig(video_tasks=("moving_directon",))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "run"), "--frame-tasks", "colur"])
    assert exit_info.value.code == 2
    assert "unknown frame task(s) ['colur']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("supervision", ["letters", "dense"])
def test_worker_processes_build_the_same_batches_and_train_the_same_weights(toy_checkpoint, tmp_path, supervision):
    from flowkit.smol_video.training.trainer import build, iter_batches, load_trainable_state, step_batch

    cfg = config(toy_checkpoint, stage="video", steps=3, frame_batch_every=2, supervision=supervision)
    _, processor = build(cfg)
    pooled = config(toy_checkpoint, stage="video", steps=3, frame_batch_every=2, supervision=supervision, workers=2)
    for step, batch in zip(range(1, 3), iter_batches(pooled, processor, 1, 3)):
        expected = step_batch(cfg, processor, step)
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(batch[key], value), key
            else:
                assert batch[key] == value, key
    train(cfg, tmp_path / "inline", progress=False)
    train(pooled, tmp_path / "pooled", progress=False)
    inline, workers = load_trainable_state(tmp_path / "inline"), load_trainable_state(tmp_path / "pooled")
    assert inline.keys() == workers.keys()
    assert all(torch.equal(inline[k], workers[k]) for k in inline)


def test_a_minutes_budget_fits_the_schedule_and_is_logged(toy_checkpoint, tmp_path):
    cfg = config(toy_checkpoint, stage="video", steps=10_000, warmup=5, eval_every=1000, log_every=1000, minutes=0.05)
    result = train(cfg, tmp_path / "run", progress=False)
    assert set(result) == {"scene_transition", "frame_colour"}  # the stopping point is evaluated
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    fitted = [r for r in log if r.get("event") == "schedule fitted to --minutes"]
    assert len(fitted) == 1 and 5 < fitted[0]["steps"] < 10_000
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == fitted[0]["steps"]
    assert log[-1]["step"] <= fitted[0]["steps"] and "eval" in log[-1]


def test_training_config_rejects_bad_devices_workers_and_budgets(toy_checkpoint):
    for bad, match in (
        ({"device": "tpu"}, "unknown device"),
        ({"workers": -1}, "workers"),
        ({"minutes": 0}, "minutes"),
    ):
        with pytest.raises(ValueError, match=match):
            config(toy_checkpoint, **bad)


def test_a_snapshot_exports_the_same_delta_as_its_run(toy_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from flowkit.smol_video.training.evaluate import delta_file
    from flowkit.smol_video.training.trainer import save_snapshot

    run = tmp_path / "video"
    train(config(toy_checkpoint, stage="video", lora_rank=2), run, progress=False)
    save_snapshot(run, tmp_path / "snap.safetensors")
    from_run, from_snapshot = export_delta(run), export_delta(tmp_path / "snap.safetensors")
    assert from_run.keys() == from_snapshot.keys() and float(from_snapshot["lora::scale"]) == 8.0
    for key, value in from_run.items():  # the snapshot is float16: equal to that precision
        assert torch.allclose(value.float(), from_snapshot[key].float(), rtol=2e-3, atol=2e-3), key
    exported = delta_file(str(tmp_path / "snap.safetensors"))
    assert not any(k.startswith("projector_norm.") for k in load_file(exported))
    assert delta_file(str(exported)) == exported  # a delta is used as it is
    with pytest.raises(FileNotFoundError, match="does not exist"):
        delta_file(str(tmp_path / "nothing.safetensors"))


def test_a_shipped_delta_warm_starts_a_run_with_a_frozen_projector_norm(toy_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from flowkit.smol_video.training.export import _save
    from flowkit.smol_video.training.trainer import load_trainable_state

    run = tmp_path / "control"
    train(config(toy_checkpoint, stage="align"), run, progress=False)
    delta_path = tmp_path / "control.safetensors"
    _save(export_delta(run), delta_path)
    shipped = load_file(delta_path)
    # read as a trainable state, the delta exports back to itself: the identity norm folds in a factor of 1
    again = export_delta(delta_path)
    assert again.keys() == shipped.keys()
    assert all(torch.equal(again[k].float(), shipped[k].float()) for k in shipped)
    with pytest.raises(ValueError, match="--freeze-projector-norm"):
        train(config(toy_checkpoint, stage="align", init_from=str(delta_path)), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="--lora-rank 2"):
        cfg = config(toy_checkpoint, stage="align", init_from=str(delta_path), freeze_projector_norm=True, lora_rank=4)
        train(cfg, tmp_path / "b", progress=False)
    warm = tmp_path / "warm"
    cfg = config(toy_checkpoint, stage="align", init_from=str(delta_path), freeze_projector_norm=True)
    train(cfg, warm, progress=False)
    state = load_trainable_state(warm)
    assert torch.equal(state["projector_norm.norm.weight"], torch.ones_like(state["projector_norm.norm.weight"]))
    assert torch.equal(
        state["projector_norm.norm.running_mean"], torch.zeros_like(state["projector_norm.norm.running_mean"])
    )
    key = "model.model.multi_modal_projector.linear_2.weight"
    assert not torch.equal(state[key], load_trainable_state(delta_path)[key])  # the projector itself trained
    with pytest.raises(ValueError, match="same --freeze-projector-norm"):
        train(config(toy_checkpoint, stage="align", init_from=str(run), steps=3), warm, progress=False)
    # a new run warm-started from the frozen run must keep its norm frozen; a frozen norm needs a warm start
    with pytest.raises(ValueError, match="never saw a batch"):
        train(config(toy_checkpoint, stage="align", init_from=str(warm)), tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="needs|give --init-from"):
        train(config(toy_checkpoint, stage="align", freeze_projector_norm=True), tmp_path / "d", progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()  # refused before anything is written


def test_export_replaces_the_model_keeps_the_control_and_the_history(toy_checkpoint, tmp_path, monkeypatch, capsys):
    from flowkit.locations import DATA_ENV
    from flowkit.smol_video.training.export import main as export_main

    run = tmp_path / "v3"
    train(config(toy_checkpoint, stage="video", lora_rank=2), run, progress=False)
    shipped = tmp_path / "data" / "models" / "flowkit-smol-video"
    shipped.mkdir(parents=True)
    (shipped / "control.safetensors").write_bytes(b"the old control")
    old = {
        "files_bytes": {"control.safetensors": 15},
        "runs": [{"name": "gpu-continue-B", "config": {}, "last_eval": {}}],
    }
    (shipped / "meta.json").write_text(json.dumps(old))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    with pytest.raises(SystemExit):  # neither a control run nor --keep-control
        export_main([str(run)])
    assert "--keep-control" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main([str(tmp_path / "nowhere"), "--keep-control", "--keep-history"])
    assert "not a training run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the kept control's run would drop out of meta.json
        export_main([str(run), "--keep-control"])
    assert "--keep-history" in capsys.readouterr().err
    assert export_main([str(run), "--keep-control", "--keep-history"]) == 0
    meta = json.loads((shipped / "meta.json").read_text())
    assert [r["name"] for r in meta["runs"]] == ["gpu-continue-B", "v3"] and meta["runs"][1]["config"][
        "stage"
    ] == "video"
    assert (shipped / "control.safetensors").read_bytes() == b"the old control"
    assert meta["files_bytes"]["delta.safetensors"] == (shipped / "delta.safetensors").stat().st_size > 0
    assert export_main([str(run), "--keep-control", "--keep-history"]) == 0  # again: the run is recorded once
    assert [r["name"] for r in json.loads((shipped / "meta.json").read_text())["runs"]] == ["gpu-continue-B", "v3"]
    assert sorted(p.name for p in shipped.iterdir()) == ["control.safetensors", "delta.safetensors", "meta.json"]


def test_a_stop_signal_checkpoints_after_the_current_step_and_resuming_finishes_the_run(
    toy_checkpoint, tmp_path, monkeypatch
):
    import os
    import signal

    from flowkit.smol_video.training import trainer
    from flowkit.smol_video.training.trainer import load_trainable_state

    whole, split = tmp_path / "whole", tmp_path / "split"
    train(config(toy_checkpoint, stage="align", steps=4, eval_every=4), whole, progress=False)
    cfg = config(toy_checkpoint, stage="align", steps=4, eval_every=4, checkpoint_minutes=1e-9)
    previous = signal.getsignal(signal.SIGTERM)
    to_device, calls = trainer.to_device, []

    def signal_during_the_second_step(batch, device):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what `kill PID` does to a background run
        return to_device(batch, device)

    monkeypatch.setattr(trainer, "to_device", signal_during_the_second_step)
    with pytest.raises(trainer.TrainingStopped, match="stopped after step 2"):  # a caller (ab.py) stops too
        train(cfg, split, progress=False)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is given back
    events = [json.loads(line) for line in (split / "log.jsonl").read_text().splitlines()]
    stopped = [e for e in events if e.get("event") == "stopped on request, checkpoint saved"]
    assert [e["step"] for e in stopped] == [2]
    monkeypatch.setattr(trainer, "to_device", to_device)
    train(cfg, split, progress=False)  # resumes from the checkpoint and finishes
    a, b = load_trainable_state(whole), load_trainable_state(split)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_asks_another_split_when_given_one_and_says_how_to_make_one(tmp_path):
    from flowkit.data.question_sets import write_split
    from flowkit.smol_video.training.evaluate import main, questions_of

    assert questions_of(None) is None  # the shipped split
    write_split(tmp_path / "fresh", seed=60221, per_task=2, tasks=["object_count"], num_frames=8)
    samples = questions_of(str(tmp_path / "fresh"))
    assert [s.id for s in samples] == ["object_count/0000", "object_count/0001"]
    assert all(len(s.frames) == 8 for s in samples)
    with pytest.raises(SystemExit, match="python -m flowkit.data generate"):
        main([str(tmp_path / "delta.safetensors"), "--questions", str(tmp_path / "missing")])
