"""The kit's shipped model: assembled from data/, loaded in NF4 on the CPU like any checkpoint,
matching the precomputed results that the chapters read, and measured by the fidelity command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

#: the shipped model's and control's fingerprints: content of the files they are assembled from,
#: NF4 settings and the portable numeric path — the same on every machine (see flowkit.model.fingerprint)
SHIPPED_FINGERPRINT = "b17bbc67e7e98d20"
CONTROL_FINGERPRINT = "6e4d2432f10eff89"


@pytest.fixture(scope="module")
def shipped():
    from flowkit.course import chapters

    return chapters.model()


def test_loads_in_nf4_as_a_llava_next_video_model(shipped):
    import bitsandbytes as bnb
    from transformers import LlavaNextVideoForConditionalGeneration

    assert isinstance(shipped.model, LlavaNextVideoForConditionalGeneration)
    assert shipped.num_layers == 30
    four_bit = [m for m in shipped.language_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 30 * 7  # q, k, v, o, gate, up, down in every layer
    assert shipped.model.config.quantization_config.bnb_4bit_quant_type == "nf4"


def test_fingerprint_is_the_committed_one_and_the_numeric_path_portable(shipped):
    from flowkit.course import chapters
    from flowkit.model.nf4_cpu import fast_path_layers

    assert shipped.fingerprint == SHIPPED_FINGERPRINT
    assert chapters.model(chapters.CONTROL).fingerprint == CONTROL_FINGERPRINT
    assert shipped.numeric_path == "nf4/fp32-dequant/cpu" and fast_path_layers(shipped.model) == []


def test_session_replay_is_exact_on_the_default_nf4_path(shipped):
    """SmolLM2's shapes are the ones bitsandbytes' AVX512-BF16 kernel takes; on the default path the
    session's replay still equals full forwards (the toy models' shapes never reach that kernel)."""
    import torch

    from flowkit import KnockoutSpec, LayerWindow
    from flowkit.data import shipped_questions
    from flowkit.model.nf4_cpu import fast_path_layers

    sample = next(s for s in shipped_questions() if s.task == "action_antonym")
    prepared = shipped.prepare_sample(sample)
    specs = [
        KnockoutSpec.single(group, LayerWindow(centre))
        for group in ("cross_frame", "video->question", "question->last", "video->last", "last->last")
        for centre in (3, 14, 26)
    ]
    fast = shipped.session(prepared).last_logits(specs)
    worst = max(
        float((torch.softmax(shipped.last_logits(prepared, spec), -1) - torch.softmax(logits, -1)).abs().max())
        for spec, logits in zip(specs, fast)
    )
    assert worst <= 1e-5, worst
    assert fast_path_layers(shipped.model) == []


def test_the_precomputed_results_are_this_models(shipped):
    from flowkit.course.results import load_report, verify

    report = load_report()
    assert report["fingerprint"] == shipped.fingerprint and report["quant"] == "nf4"
    for table in ("sweeps", "accuracy", "pathway_search", "pathway_search_test", "quantization"):
        checked = verify(shipped, table, n=2, seed=11)
        assert checked["max_abs_diff"].max() <= 1e-4


def test_the_control_and_its_results():
    from flowkit.course import chapters
    from flowkit.course.results import load_report, verify

    control = chapters.model(chapters.CONTROL)
    assert control.fingerprint == load_report()["control_fingerprint"]
    assert verify(control, "control_accuracy", n=1)["max_abs_diff"].max() <= 1e-4


def test_fidelity_command_on_a_small_subset(tmp_path):
    out = tmp_path / "fidelity.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit",
            "fidelity",
            "--per-task",
            "1",
            "--sweep-per-task",
            "1",
            "--centers-step",
            "10",
            "--random-seeds",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "paper (LLaVA-NeXT-7B)" in run.stdout and "F4 edges kept" in run.stdout
    report = json.loads(out.read_text())
    assert report["model"] == "flowkit-smol-video" and report["quant"] == "nf4" and len(report["samples"]) == 6
    assert {"F1", "F2", "F3", "F4", "accuracy", "control_accuracy"} <= set(report)


def test_the_committed_resume_point_reads_where_a_lone_object_is():
    """``resume/place.safetensors`` (the model card's training chain) still answers its
    curriculum questions: measured 32/32 on "left or right?" and 31/32 on "top or bottom?"."""
    from flowkit.smol_video import shipped_dir
    from flowkit.smol_video.training.trainer import TrainConfig, build, evaluate, evaluation_sets

    snapshot = shipped_dir() / "resume" / "place.safetensors"
    config = TrainConfig(
        stage="video",
        video_tasks=(),
        frame_tasks=("lone_side", "lone_height"),
        init_from=str(snapshot),
        eval_per_task=32,
    )
    trainable, processor = build(config)
    accuracy = evaluate(trainable, processor, evaluation_sets(config))
    assert accuracy["frame_lone_side"] >= 0.9 and accuracy["frame_lone_height"] >= 0.85, accuracy


def test_the_evaluation_command_asks_another_split_with_the_shipped_delta(shipped, tmp_path):
    """``python -m flowkit.smol_video.training.evaluate DELTA --questions DIR``: the model it assembles
    from the shipped delta answers a fresh split exactly as the shipped model does."""
    from flowkit.analysis.experiments import answer_table
    from flowkit.data import load_question_set, write_split
    from flowkit.locations import data_path
    from flowkit.smol_video.training.evaluate import main

    write_split(tmp_path / "fresh", seed=60221, per_task=1, tasks=["object_count", "scene_transition"])
    out = tmp_path / "accuracy.json"
    delta = data_path("models") / "flowkit-smol-video" / "delta.safetensors"
    assert main([str(delta), "--questions", str(tmp_path / "fresh"), "--json", str(out)]) == 0
    measured = json.loads(out.read_text())[str(delta)]
    expected = answer_table(shipped, load_question_set(tmp_path / "fresh"), progress=False)
    assert measured == expected.groupby("task")["correct"].mean().to_dict()
