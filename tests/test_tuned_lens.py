"""The tuned lens (flowkit.analysis.tuned_lens) on the tiny same-class model: identity at init, a fit
that lowers KL, a float16 file that reloads to the same outputs, the evaluation seed refused, and
the command's atomic write and argument errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit.analysis import tuned_lens as tl
from flowkit.analysis.lens import activations, logit_lens
from flowkit.data import EVAL_SEED

SEED = 4242
TASKS = ["moving_direction", "scene_transition"]


@pytest.fixture(scope="module")
def train_data(toy_fp32):
    samples = tl.training_samples(SEED, 2, TASKS)
    return samples, tl.collect(toy_fp32, samples, extra_positions=2, seed=SEED)


@pytest.fixture(scope="module")
def heldout_data(toy_fp32):
    return tl.collect(toy_fp32, tl.training_samples(SEED, 1, TASKS, start=2), extra_positions=0, seed=SEED)


@pytest.fixture(scope="module")
def fitted(toy_fp32, train_data):
    samples, data = train_data
    torch.manual_seed(0)
    return tl.fit_tuned_lens(toy_fp32, samples, seed=SEED, rank=4, steps=40, batch=8, lr=3e-2, data=data)


def _d_model(vllm) -> int:
    return vllm.language_model.norm.weight.shape[-1]


def test_identity_at_init_is_the_logit_lens(toy_fp32, prepared_fp32):
    lens = tl.TunedLens(toy_fp32.num_layers, _d_model(toy_fp32), rank=4, init_seed=3)
    hidden = activations(toy_fp32, prepared_fp32).resid_posts()
    assert torch.equal(tl.tuned_lens_logits(toy_fp32, lens, hidden), logit_lens(toy_fp32, hidden))


def test_a_short_fit_lowers_kl(toy_fp32, fitted, heldout_data, train_data):
    _, data = train_data
    last = toy_fp32.num_layers - 1
    for rows in (data, heldout_data):
        before = tl.kl_by_layer(toy_fp32, None, rows)
        after = tl.kl_by_layer(toy_fp32, fitted, rows)
        assert after[last] == pytest.approx(0, abs=1e-5) and before[last] == pytest.approx(0, abs=1e-5)
        assert after[:last].mean() < 0.8 * before[:last].mean()
    assert fitted.config["training_seed"] == SEED and fitted.config["rank"] == 4


def test_save_and_load_give_bit_identical_outputs(toy_fp32, fitted, prepared_fp32, tmp_path):
    path = tl.save_tuned_lens(fitted, tmp_path / "lens.safetensors")
    loaded = tl.load_tuned_lens(path)
    hidden = activations(toy_fp32, prepared_fp32).resid_posts()
    assert torch.equal(tl.tuned_lens_logits(toy_fp32, loaded, hidden), tl.tuned_lens_logits(toy_fp32, fitted, hidden))
    assert loaded.config == fitted.config and loaded.rank == fitted.rank
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}
    assert path.stat().st_size < fitted.file_bytes() + 4096


def test_the_evaluation_seed_is_refused(toy_fp32, train_data):
    samples, data = train_data
    with pytest.raises(tl.TunedLensError, match="evaluation split"):
        tl.fit_tuned_lens(toy_fp32, samples, seed=EVAL_SEED, steps=1, data=data)
    with pytest.raises(tl.TunedLensError, match="evaluation split"):
        tl.training_samples(EVAL_SEED, 1, TASKS)


def test_readouts_and_first_crossing(toy_fp32, fitted, prepared_fp32):
    table = tl.answer_readouts(toy_fp32, prepared_fp32, fitted)
    assert set(table["readout"]) == set(tl.READOUTS)
    sums = table.groupby(["readout", "layer"])["prob"].sum()
    assert np.allclose(sums.loc["options_renormalised"], 1) and np.allclose(sums.loc["tuned_options_renormalised"], 1)
    assert (sums.loc["logit"] <= 1 + 1e-6).all()
    curves = np.array([[0.1, 0.4, 0.6, 0.9], [0.2, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.9]])
    layer, lo, hi = tl.first_layer_above(curves)
    assert layer == 2 and lo <= 2 <= hi
    assert tl.first_layer_above(np.zeros((2, 3)))[0] == 3  # never crosses: one past the last layer


def _argv(toy_checkpoint, out, *extra):
    return ["fit", "--model", str(toy_checkpoint), "--quant", "fp32", "--seed", str(SEED), "--per-task", "1",
            "--heldout-per-task", "1", "--tasks", *TASKS, "--rank", "2", "--steps", "2", "--batch", "4",
            "--quiet", "--out", str(out), *extra]  # fmt: skip


def test_the_command_writes_both_files(toy_checkpoint, tmp_path, capsys):
    out = tmp_path / "lens.safetensors"
    assert tl.main(_argv(toy_checkpoint, out)) == 0
    report = __import__("json").loads(out.with_suffix(".json").read_text())
    assert report["config"]["training_seed"] == SEED and "--seed 4242" in report["command"]
    assert len(report["heldout"]["kl_tuned"]) == report["heldout"]["kl_identity"].__len__()
    assert tl.load_tuned_lens(out).rank == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens.json", "lens.safetensors"]
    assert "wrote" in capsys.readouterr().out


def test_the_command_writes_atomically(toy_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "lens.safetensors"
    out.write_bytes(b"old")

    def broken_save(lens, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tl, "save_tuned_lens", broken_save)
    with pytest.raises(OSError, match="disk full"):
        tl.main(_argv(toy_checkpoint, out, "--overwrite"))
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens.safetensors"]  # no temporary, no JSON


@pytest.mark.parametrize(
    "change, message",
    [
        (["--seed", str(EVAL_SEED)], "evaluation split"),
        (["--per-task", "0"], "--per-task must be at least 1"),
        (["--rank", "-1"], "--rank must be at least 0"),
        (["--tasks", "juggling"], "unknown task(s) juggling"),
        (["--out", "lens.bin"], "must name a .safetensors file"),
        (["--out", "missing/lens.safetensors"], "does not exist"),
        (["--lr", "0"], "--lr must be positive"),
    ],
)
def test_the_command_rejects_bad_arguments(toy_checkpoint, tmp_path, capsys, change, message):
    argv = _argv(toy_checkpoint, tmp_path / "lens.safetensors")
    flag, value = change
    if flag == "--out":
        value = str(tmp_path / value)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv[1:1] = [flag, value]
    with pytest.raises(SystemExit) as exit_info:
        tl.main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not any(tmp_path.iterdir())


def test_an_existing_file_needs_overwrite(toy_checkpoint, tmp_path, capsys):
    out = tmp_path / "lens.safetensors"
    out.write_bytes(b"old")
    with pytest.raises(SystemExit):
        tl.main(_argv(toy_checkpoint, out))
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"old"


def test_the_shipped_lens_fits_its_budget():
    from flowkit.locations import data_path

    path = data_path("models") / "flowkit-smol-video" / "tuned_lens.safetensors"
    lens = tl.load_tuned_lens(path)
    report = __import__("json").loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size <= tl.MAX_FILE_BYTES and report["file_bytes"] == path.stat().st_size
    assert (lens.num_layers, lens.d_model) == (30, 576) and lens.rank == report["config"]["rank"]
    assert lens.config["training_seed"] != EVAL_SEED and lens.config == report["config"]


def test_a_stale_shipped_lens_is_said_not_silently_dropped():
    from types import SimpleNamespace

    from flowkit.analysis.tuned_lens import load_tuned_lens
    from flowkit.course.fidelity import stale_tuned_lens_note
    from flowkit.model.named_models import KIT_MODEL
    from flowkit.smol_video import shipped_dir

    shipped = load_tuned_lens(shipped_dir() / "tuned_lens.safetensors")
    fitted_on = SimpleNamespace(fingerprint=shipped.config["fingerprint"])
    assert stale_tuned_lens_note(KIT_MODEL, fitted_on) is None
    note = stale_tuned_lens_note(KIT_MODEL, SimpleNamespace(fingerprint="another version"))
    assert note and "refit" in note
    assert stale_tuned_lens_note("some/other-checkpoint", SimpleNamespace(fingerprint="x")) is None
