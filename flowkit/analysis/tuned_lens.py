"""The tuned lens (Belrose et al. 2023) and the options-renormalised readout: reading the answer in earlier layers.

On the kit's model the logit lens (final norm + ``lm_head``, :func:`flowkit.analysis.lens.logit_lens`)
sees the answer only at the last layer: a middle layer's residual stream is not yet in the basis the
head reads. Two readouts that look earlier:

- **options-renormalised** (:func:`options_renormalised`): the logit lens's probabilities of the
  option letters only, renormalised to sum to 1 — "which option does this layer prefer", ignoring how
  much mass the rest of the vocabulary has. Free, but it says nothing about the whole vocabulary.
- **tuned lens** (:class:`TunedLens`): one small learned *translator* per layer, trained so that the
  translated hidden state, through the model's own final norm and ``lm_head``, gives the *final*
  layer's next-token distribution (minimising KL(final ‖ lens)). The whole vocabulary, read early.

The translator of layer ``l`` acts on the RMS-normalised state ``ĥ = h / rms(h)``::

    h ↦ h + rms(h) · (d_l ⊙ ĥ + U_l V_lᵀ ĥ + b_l)

a diagonal plus rank-``r`` affine map (a full 576×576 map per layer would not fit the 8 MB
budget of a shipped file); ``U_l = d_l = b_l = 0`` at initialisation, so an untrained lens *is* the
logit lens. Acting on ``ĥ`` (the final norm ignores the scale) lets one learning rate suit every
layer. ``rank=0`` gives the diagonal-only form. The last layer has no translator (its lens is the
model's output).

Training data come from :func:`training_samples`: questions generated with a *training* seed
(:func:`flowkit.data.generate`), never :data:`flowkit.data.EVAL_SEED` (the shipped split's seed is
refused everywhere here). :func:`fit_tuned_lens` trains; :func:`save_tuned_lens` /
:func:`load_tuned_lens` write and read a float16 safetensors file (the float16 rounding happens once,
at the end of the fit, so a lens in memory and the same lens reloaded give bit-identical outputs).

From the shell (the kit's shipped lens was made with the command in
``data/models/flowkit-smol-video/tuned_lens.json``)::

    python -m flowkit.analysis.tuned_lens fit --model flowkit-smol-video --seed 4242 --per-task 24 \\
        --rank 32 --steps 60 --batch 24 --out data/models/flowkit-smol-video/tuned_lens.safetensors

(about 3.5 minutes on one CPU thread: 144 forward passes, then 60 Adam steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowkit.analysis.lens import _lm_head_weight, activations, logit_lens
from flowkit.atomic_files import atomic_paths
from flowkit.data.synthetic import EVAL_SEED
from flowkit.errors import FlowkitError
from flowkit.prompts.readout import logit_lens_emergence

#: the file format's name and version (in every saved file's metadata)
FORMAT = "flowkit-tuned-lens/1"
#: what a shipped lens file may weigh
MAX_FILE_BYTES = 8 * 1024 * 1024
#: the readouts :func:`answer_readouts` gives
READOUTS = ("logit", "options_renormalised", "tuned", "tuned_options_renormalised")


class TunedLensError(FlowkitError, ValueError):
    """A tuned lens that cannot be fitted, saved or loaded as asked."""


def check_training_seed(seed) -> int:
    """``seed`` if it may generate training data: an integer ≥ 0 other than the shipped split's seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TunedLensError(f"the training seed must be an integer >= 0, got {seed!r}")
    if int(seed) == EVAL_SEED:
        raise TunedLensError(
            f"seed {EVAL_SEED} generates the shipped evaluation split (flowkit.data.EVAL_SEED); "
            "fit the tuned lens on questions from another seed"
        )
    return int(seed)


# ----------------------------------------------------------------------------- the lens


class TunedLens(torch.nn.Module):
    """One diagonal-plus-low-rank affine translator per layer (all but the last); see the module docstring.

    Args:
        num_layers: the language model's layers ``L``; translators exist for layers ``0 .. L-2``.
        d_model: the residual stream's width.
        rank: ``r`` of the low-rank part (0: diagonal only).
        init_seed: seeds ``V`` (random; ``U = 0`` keeps the lens the identity at initialisation).
        config: extra JSON-able facts kept with the lens (model, training seed, ...).
    """

    def __init__(
        self, num_layers: int, d_model: int, rank: int = 32, *, init_seed: int = 0, config: dict | None = None
    ):
        super().__init__()
        if num_layers < 1 or d_model < 1:
            raise TunedLensError(f"need num_layers >= 1 and d_model >= 1, got {num_layers}, {d_model}")
        if not 0 <= rank <= d_model:
            raise TunedLensError(f"rank must be in 0..{d_model} (d_model), got {rank}")
        self.num_layers, self.d_model, self.rank = int(num_layers), int(d_model), int(rank)
        self.config = dict(config or {})
        n = self.num_layers - 1
        generator = torch.Generator().manual_seed(init_seed)
        self.diag = torch.nn.Parameter(torch.zeros(n, d_model))
        self.bias = torch.nn.Parameter(torch.zeros(n, d_model))
        self.U = torch.nn.Parameter(torch.zeros(n, d_model, rank))
        self.V = torch.nn.Parameter(torch.randn(n, d_model, rank, generator=generator) / math.sqrt(d_model))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def file_bytes(self) -> int:
        """Bytes of the parameters in float16 (a saved file adds a small header)."""
        return 2 * self.num_parameters

    def forward(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """The translated hidden state(s) ``(..., d_model)`` of layer ``layer`` (float32)."""
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer!r} is not a layer of this lens (0..{self.num_layers - 1})")
        hidden = hidden.float()
        if layer == self.num_layers - 1:
            return hidden
        rms = hidden.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()
        unit = hidden / rms
        delta = unit * self.diag[layer] + self.bias[layer]
        if self.rank:
            delta = delta + (unit @ self.V[layer]) @ self.U[layer].T
        return hidden + rms * delta

    def translate(self, hidden_by_layer: torch.Tensor) -> torch.Tensor:
        """Every layer's translated states: ``hidden_by_layer`` is ``(num_layers, ..., d_model)``."""
        if hidden_by_layer.shape[0] != self.num_layers:
            raise TunedLensError(
                f"expected hidden states of {self.num_layers} layers (first dimension), got {tuple(hidden_by_layer.shape)}"
            )
        return torch.stack([self(hidden_by_layer[layer], layer) for layer in range(self.num_layers)])

    @torch.no_grad()
    def round_to_float16_(self) -> TunedLens:
        """Round the parameters to float16 values in place (kept in float32): what a saved file holds."""
        for p in self.parameters():
            p.copy_(p.half().float())
        return self


def tuned_lens_logits(vllm, lens: TunedLens, hidden_by_layer: torch.Tensor) -> torch.Tensor:
    """Logits ``(num_layers, ..., vocab)``: each layer's hidden states through its translator, the final norm and ``lm_head``.

    ``hidden_by_layer`` is ``(num_layers, ..., d_model)``, e.g. ``activations(vllm, prepared).resid_posts(positions)``.
    """
    _check_lens_fits(vllm, lens)
    with torch.no_grad():
        translated = lens.translate(hidden_by_layer.float())
    return logit_lens(vllm, translated)


def tuned_lens_readout(lens: TunedLens):
    """An emergence readout (:data:`flowkit.prompts.readout.EMERGENCE_READOUTS`' signature) that reads
    every layer's stream through ``lens``'s translator, the final norm and ``lm_head``; whole vocabulary.
    Pass it to :func:`flowkit.analysis.experiments.answer_emergence` (``readouts={"tuned_lens": ...}``)."""

    def readout(hidden, norm, head, letter_ids):
        with torch.no_grad():
            translated = lens.translate(hidden.float())
        return logit_lens_emergence(translated, norm, head, letter_ids)  # the logit lens on translated states

    return readout


def _check_lens_fits(vllm, lens: TunedLens) -> None:
    d_model = vllm.language_model.norm.weight.shape[-1]
    if (lens.num_layers, lens.d_model) != (vllm.num_layers, d_model):
        raise TunedLensError(
            f"this tuned lens is for {lens.num_layers} layers of width {lens.d_model} "
            f"({lens.config.get('model', 'another model')}); the model has {vllm.num_layers} of width {d_model}"
        )


# ----------------------------------------------------------------------------- save / load


def save_tuned_lens(lens: TunedLens, path: str | os.PathLike) -> Path:
    """Write ``lens`` as float16 safetensors, all or nothing; its config goes into the file's metadata.

    The parameters are rounded to float16 (in place) first, so ``lens`` and ``load_tuned_lens(path)``
    give bit-identical outputs.
    """
    from safetensors.torch import save_file

    path = Path(path)
    lens.round_to_float16_()
    tensors = {name: p.detach().half().contiguous() for name, p in lens.named_parameters()}
    metadata = {
        "format": FORMAT,
        "num_layers": str(lens.num_layers),
        "d_model": str(lens.d_model),
        "rank": str(lens.rank),
        "config": json.dumps(lens.config, sort_keys=True),
    }
    with atomic_paths([path]) as (tmp,):
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_tuned_lens(path: str | os.PathLike) -> TunedLens:
    """Read a lens written by :func:`save_tuned_lens` (float16 on disk, float32 in memory)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise TunedLensError(f"no tuned lens at {path}; fit one with `python -m flowkit.analysis.tuned_lens fit ...`")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("format") != FORMAT:
            raise TunedLensError(f"{path} is not a tuned lens file ({FORMAT}); its format is {meta.get('format')!r}")
        lens = TunedLens(
            int(meta["num_layers"]), int(meta["d_model"]), int(meta["rank"]), config=json.loads(meta["config"])
        )
        with torch.no_grad():
            for name, p in lens.named_parameters():
                p.copy_(handle.get_tensor(name).float())
    return lens


# ----------------------------------------------------------------------------- training data


def training_samples(
    seed: int, per_task: int, tasks: Sequence[str] | None = None, *, start: int = 0, num_frames: int = 8
):
    """Questions ``start .. start + per_task - 1`` of each task generated from a training ``seed``, at
    ``num_frames`` frames sampled uniformly from the generator's 16 (as the shipped split is read).

    Refuses :data:`flowkit.data.EVAL_SEED`. Question ``i`` depends only on ``(seed, task, i)``, so
    ``start=per_task`` gives a held-out set disjoint from ``start=0``'s.
    """
    from flowkit.data import TASKS, uniform_frame_indices
    from flowkit.data.synthetic import iter_samples

    seed = check_training_seed(seed)
    tasks = list(TASKS) if tasks is None else list(tasks)
    chosen = []
    for task in tasks:
        for sample in list(iter_samples(task, start + per_task, seed, num_frames=16, size=64))[start:]:
            index = uniform_frame_indices(sample.frames.shape[0], num_frames)
            chosen.append(dataclasses.replace(sample, frames=sample.frames[index]))
    return chosen


@dataclass
class LensData:
    """Residual streams collected for fitting or scoring a lens: ``hidden`` is ``(rows, num_layers, d_model)``
    (float32), one row per (prompt, position); ``last`` marks the rows at a prompt's last position."""

    hidden: torch.Tensor
    last: torch.Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]


def _refuse_shipped(samples) -> None:
    try:
        from flowkit.data import shipped_questions_root

        shipped = shipped_questions_root().resolve()
    except FlowkitError:
        return
    for sample in samples:
        if sample.video_path and shipped in Path(sample.video_path).resolve().parents:
            raise TunedLensError(
                f"{sample.id} comes from the shipped evaluation split ({sample.video_path}); "
                "fit the tuned lens on questions generated with a training seed (training_samples)"
            )


def collect(vllm, samples, *, extra_positions: int = 2, seed: int = 0, progress: bool = False) -> LensData:
    """The residual stream after every layer at each prompt's last position and at ``extra_positions``
    more positions drawn (seeded) among the text after the video. One clean forward per prompt."""
    from tqdm.auto import tqdm

    _refuse_shipped(samples)
    rng = np.random.default_rng([seed, 17])
    rows, last = [], []
    for sample in tqdm(samples, desc="activations", disable=not progress):
        prepared = vllm.prepare_sample(sample)
        spans = prepared.spans
        video_end = max(end for _, end in spans.frame_spans) if spans.frame_spans else 0
        pool = np.arange(video_end, spans.last)
        picks = (
            rng.choice(pool, size=min(extra_positions, len(pool)), replace=False).tolist() if extra_positions else []
        )
        positions = [spans.last] + sorted(int(p) for p in picks)
        cache = activations(vllm, prepared)
        rows.append(cache.resid_posts(positions).transpose(0, 1))  # (positions, layers, d)
        last += [True] + [False] * len(picks)
    return LensData(torch.cat(rows), torch.tensor(last))


# ----------------------------------------------------------------------------- fitting and scoring


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _head(vllm):
    norm = vllm.language_model.norm
    dtype = next(norm.parameters()).dtype
    weight = _lm_head_weight(vllm)

    def logprobs(hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(norm(hidden.to(dtype)).float() @ weight.T, dim=-1)

    return norm, logprobs


def kl_by_layer(
    vllm, lens: TunedLens | None, data: LensData, *, last_only: bool = False, batch: int = 64
) -> np.ndarray:
    """Mean KL(final layer ‖ lens) in nats per layer over the rows of ``data`` (``lens=None``: the logit lens)."""
    norm, logprobs = _head(vllm)
    hidden = data.hidden[data.last] if last_only else data.hidden
    num_layers = hidden.shape[1]
    totals = np.zeros(num_layers)
    with torch.no_grad():
        for start in range(0, len(hidden), batch):
            chunk = hidden[start : start + batch]
            target = logprobs(chunk[:, -1])
            p = target.exp()
            for layer in range(num_layers):
                h = chunk[:, layer] if lens is None else lens(chunk[:, layer], layer)
                totals[layer] += float((p * (target - logprobs(h))).sum())
    return totals / max(len(hidden), 1)


def fit_tuned_lens(
    vllm,
    samples,
    *,
    seed: int,
    rank: int = 32,
    steps: int = 60,
    batch: int = 24,
    lr: float = 1e-2,
    extra_positions: int = 2,
    data: LensData | None = None,
    progress: bool = False,
) -> TunedLens:
    """Fit a :class:`TunedLens` on ``samples`` (questions generated with the training ``seed``).

    Minimises the mean over layers and rows of KL(final layer's next-token distribution ‖ lens
    distribution), rows being each prompt's last position plus ``extra_positions`` positions of its
    text (:func:`collect`), with Adam (learning rate ``lr``, linearly decayed to 0 over ``steps``
    steps of ``batch`` rows, all layers every step). ``seed`` must not be
    :data:`flowkit.data.EVAL_SEED`; it also seeds the positions, the batches and ``V``. Pass ``data``
    (from :func:`collect`) to skip the forward passes. The result's parameters are rounded to float16
    (what :func:`save_tuned_lens` writes), its ``config`` records the fit.
    """
    seed = check_training_seed(seed)
    if steps < 0 or batch < 1 or not lr > 0:
        raise TunedLensError(f"need steps >= 0, batch >= 1 and lr > 0, got steps={steps}, batch={batch}, lr={lr}")
    samples = list(samples)
    if data is None:
        if not samples:
            raise TunedLensError("no training samples")
        data = collect(vllm, samples, extra_positions=extra_positions, seed=seed, progress=progress)
    d_model = data.hidden.shape[-1]
    lens = TunedLens(
        vllm.num_layers,
        d_model,
        rank,
        init_seed=seed,
        config={
            "model": getattr(vllm, "name", ""),
            "fingerprint": _fingerprint(vllm),
            "training_seed": seed,
            "prompts": len(samples),
            "rows": len(data),
            "extra_positions": extra_positions,
            "rank": rank,
            "steps": steps,
            "batch": batch,
            "lr": lr,
            "objective": "mean over layers of KL(final layer || lens), final norm + lm_head",
        },
    )
    _check_lens_fits(vllm, lens)
    from tqdm.auto import tqdm

    norm, logprobs = _head(vllm)
    optimiser = torch.optim.Adam(lens.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: max(0.0, 1 - step / max(steps, 1)))
    generator = torch.Generator().manual_seed(seed)
    trained = lens.num_layers - 1
    with _frozen(norm):
        for _ in tqdm(range(steps), desc="fit tuned lens", disable=not progress):
            rows = data.hidden[torch.randint(len(data), (min(batch, len(data)),), generator=generator)]
            with torch.no_grad():
                target = logprobs(rows[:, -1])
                p = target.exp()
            optimiser.zero_grad(set_to_none=True)
            for layer in range(trained):  # one backward per layer keeps memory at one (batch, vocab) block
                loss = (p * (target - logprobs(lens(rows[:, layer], layer)))).sum(-1).mean() / trained
                loss.backward()
            optimiser.step()
            schedule.step()
    return lens.round_to_float16_()


def _fingerprint(vllm) -> str:
    try:
        return vllm.fingerprint
    except Exception:  # a stand-in model without one
        return ""


# ----------------------------------------------------------------------------- readouts


def options_renormalised(letter_probs: torch.Tensor) -> torch.Tensor:
    """The options-renormalised readout: p(each option letter) divided by their sum over the options
    (last dimension) — the lens's choice among the options, whatever mass the rest of the vocabulary has."""
    return letter_probs / letter_probs.sum(-1, keepdim=True)


@torch.inference_mode()
def answer_readouts(vllm, prepared, lens: TunedLens | None = None, cache=None):
    """p(each option letter) at the last position after every layer, under each readout of :data:`READOUTS`.

    ``logit``: the logit lens, whole vocabulary (:func:`flowkit.analysis.lens.answer_by_layer`'s numbers);
    ``options_renormalised``: the same renormalised over the option letters; ``tuned`` and
    ``tuned_options_renormalised``: the same through ``lens`` (left out without one).

    Returns a DataFrame with ``layer``, ``readout``, ``letter``, ``prob`` and ``true``.
    """
    import pandas as pd

    spans = prepared.spans
    if spans.true_option is None:
        raise TunedLensError("answer_readouts needs the correct option: prepare the prompt with answer=...")
    if cache is None:
        cache = activations(vllm, prepared)
    hidden = cache.resid_posts(spans.last)
    letters = list(prepared.letter_ids)
    probs = {"logit": torch.softmax(logit_lens(vllm, hidden), dim=-1)[:, letters]}
    if lens is not None:
        probs["tuned"] = torch.softmax(tuned_lens_logits(vllm, lens, hidden), dim=-1)[:, letters]
    readouts = {}
    for name, p in probs.items():
        readouts[name] = p
        readouts[f"{name}_options_renormalised".replace("logit_", "")] = options_renormalised(p)
    rows = [
        (layer, name, letter, float(p[layer, i]), i == spans.true_option)
        for name in READOUTS
        if name in readouts
        for p in [readouts[name]]
        for layer in range(p.shape[0])
        for i, letter in enumerate(spans.letters)
    ]
    return pd.DataFrame(rows, columns=["layer", "readout", "letter", "prob", "true"])


def first_layer_above(curves, threshold: float = 0.5, level: float = 0.95):
    """The first layer whose mean over questions exceeds ``threshold``, with a bootstrap interval.

    ``curves`` is ``(questions, layers)`` (e.g. p(true option) per layer). The interval resamples
    questions (:data:`flowkit.analysis.stats.RESAMPLES` times, seed :data:`~flowkit.analysis.stats.SEED`)
    and takes the percentiles of the first crossing layer. A curve that never crosses counts as
    layer ``layers`` (one past the last). Returns ``(layer, lo, hi)``.
    """
    from flowkit.analysis.stats import RESAMPLES, SEED

    x = np.asarray(curves, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0:
        raise TunedLensError(f"curves must be (questions, layers) with at least one question, got shape {x.shape}")

    def first(mean_curve: np.ndarray) -> np.ndarray:
        above = mean_curve > threshold
        return np.where(above.any(-1), above.argmax(-1), mean_curve.shape[-1])

    layer = int(first(x.mean(0)))
    rng = np.random.default_rng(SEED)
    boot = first(x[rng.integers(0, x.shape[0], size=(RESAMPLES, x.shape[0]))].mean(1))
    tail = (1 - level) / 2
    return layer, float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.analysis.tuned_lens",
        description="Fit a tuned lens (one diagonal-plus-low-rank translator per layer) on generated training questions.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="fit a tuned lens and write it (float16 safetensors) with a JSON of its fit")
    fit.add_argument("--model", required=True, help="checkpoint folder or named model (e.g. flowkit-smol-video)")
    fit.add_argument("--quant", default="nf4", help="how to load the model (default nf4)")
    fit.add_argument(
        "--seed", type=int, required=True, help=f"training seed of the generated questions (not {EVAL_SEED})"
    )
    fit.add_argument("--per-task", type=int, default=24, help="training questions per task (default 24)")
    fit.add_argument("--heldout-per-task", type=int, default=4, help="held-out questions per task for the fit numbers")
    fit.add_argument("--tasks", nargs="+", default=None, help="tasks to train on (default: all)")
    fit.add_argument("--rank", type=int, default=32, help="rank of each translator's low-rank part (0: diagonal only)")
    fit.add_argument("--steps", type=int, default=60, help="Adam steps (default 60)")
    fit.add_argument("--batch", type=int, default=24, help="rows per step (default 24)")
    fit.add_argument("--lr", type=float, default=1e-2, help="learning rate (default 0.01, linear decay)")
    fit.add_argument("--extra-positions", type=int, default=2, help="text positions per prompt besides the last")
    fit.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    fit.add_argument("--out", required=True, help="the .safetensors file to write (a .json beside it gets the fit)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing file")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _check_args(parser: argparse.ArgumentParser, args) -> Path:
    from flowkit.data import TASKS

    try:
        check_training_seed(args.seed)
    except TunedLensError as error:
        parser.error(f"--seed: {error}")
    for name in ("per_task", "steps", "batch", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("heldout_per_task", "rank", "extra_positions"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name)}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    unknown = sorted(set(args.tasks or ()) - set(TASKS))
    if unknown:
        parser.error(f"--tasks: unknown task(s) {', '.join(unknown)}; the tasks are {', '.join(TASKS)}")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        parser.error(f"--out must name a .safetensors file, got {args.out}")
    if not out.parent.is_dir():
        parser.error(f"--out: the folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        parser.error(f"--out: the folder {out.parent} is not writable")
    if out.exists() and not args.overwrite:
        parser.error(f"--out: {out} exists; pass --overwrite to replace it")
    return out


def _command_line(args) -> str:
    parts = ["python -m flowkit.analysis.tuned_lens fit", f"--model {args.model}", f"--seed {args.seed}"]
    parts += [f"--per-task {args.per_task}", f"--rank {args.rank}", f"--steps {args.steps}", f"--batch {args.batch}"]
    parts += [
        f"--lr {args.lr:g}",
        f"--extra-positions {args.extra_positions}",
        f"--heldout-per-task {args.heldout_per_task}",
    ]
    if args.quant != "nf4":
        parts.append(f"--quant {args.quant}")
    if args.tasks:
        parts.append("--tasks " + " ".join(args.tasks))
    return " ".join(parts + [f"--out {args.out}"])


def run_fit(args, out: Path) -> dict:
    """The ``fit`` command: load, collect, fit, score on held-out questions, write both files atomically."""
    from flowkit.model.videollm import load_videollm

    torch.set_num_threads(args.threads)
    progress = not args.quiet
    started = time.perf_counter()
    vllm = load_videollm(args.model, quant=args.quant)
    d_model = vllm.language_model.norm.weight.shape[-1]
    expected = 2 * (vllm.num_layers - 1) * d_model * (2 * args.rank + 2)
    if not args.rank <= d_model:
        raise TunedLensError(f"--rank {args.rank} exceeds the model's width {d_model}")
    if expected > MAX_FILE_BYTES:
        raise TunedLensError(
            f"--rank {args.rank} gives a {expected / 1e6:.1f} MB file on this model, over the "
            f"{MAX_FILE_BYTES / 2**20:.0f} MiB budget; lower --rank"
        )
    train = training_samples(args.seed, args.per_task, args.tasks)
    data = collect(vllm, train, extra_positions=args.extra_positions, seed=args.seed, progress=progress)
    lens = fit_tuned_lens(
        vllm,
        train,
        seed=args.seed,
        rank=args.rank,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        extra_positions=args.extra_positions,
        data=data,
        progress=progress,
    )
    fit_seconds = time.perf_counter() - started
    report = {"command": _command_line(args), "config": lens.config, "fit_seconds": round(fit_seconds, 1)}
    if args.heldout_per_task:
        held = training_samples(args.seed, args.heldout_per_task, args.tasks, start=args.per_task)
        held_data = collect(vllm, held, extra_positions=0, seed=args.seed + 1, progress=progress)
        report["heldout"] = {
            "questions": len(held),
            "note": f"questions {args.per_task}.. of each task from the training seed (disjoint from training), last position",
            "kl_identity": [round(float(v), 4) for v in kl_by_layer(vllm, None, held_data)],
            "kl_tuned": [round(float(v), 4) for v in kl_by_layer(vllm, lens, held_data)],
        }
    report["parameters"] = lens.num_parameters
    json_path = out.with_suffix(".json")
    with atomic_paths([out, json_path]) as (tmp, tmp_json):
        save_tuned_lens(lens, tmp)
        report["file_bytes"] = tmp.stat().st_size
        tmp_json.write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    out = _check_args(parser, args)
    try:
        report = run_fit(args, out)
    except FlowkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    kl = report.get("heldout")
    summary = f"wrote {out} ({report['file_bytes'] / 1e6:.2f} MB, {report['parameters']} parameters) in {report['fit_seconds']} s"
    if kl:
        summary += (
            f"; held-out mean KL {np.mean(kl['kl_identity']):.3f} (logit lens) -> {np.mean(kl['kl_tuned']):.3f} nats"
        )
    print(summary)
    return 0


__all__ = [
    "tuned_lens_readout",
    "FORMAT",
    "LensData",
    "MAX_FILE_BYTES",
    "READOUTS",
    "TunedLens",
    "TunedLensError",
    "answer_readouts",
    "check_training_seed",
    "collect",
    "first_layer_above",
    "fit_tuned_lens",
    "kl_by_layer",
    "load_tuned_lens",
    "options_renormalised",
    "save_tuned_lens",
    "training_samples",
    "tuned_lens_logits",
]


if __name__ == "__main__":
    sys.exit(main())
