"""Training the kit's small VideoLLM on this CPU, in LLaVA-style stages.

- ``embed`` (stage 0): video tokens regressed onto SmolLM2's word embeddings
  (:mod:`flowkit.smol_video.training.stage0`), no language model in the loop.
- ``align`` (stage 1): single-frame questions (:mod:`flowkit.smol_video.training.frames`); the vision
  tower and projector learn to speak the language model's language, with LoRA adapters
  on the language model (a 135M model does not read new soft tokens frozen).
  A BatchNorm after the projector removes the input-independent part of the projected
  tokens (without it, training collapses to one constant answer); it is folded into the
  projector's last Linear when the model is exported, so the shipped checkpoint is a
  plain LlavaNextVideo model. The result is the *image-only control* of finding 1.
- ``video`` (stage 2): the temporal question set's tasks (held-out seeds), LoRA adapters on the
  language model plus the vision side, with single-frame batches mixed in.

``--supervision`` picks what a step learns from: ``letters`` (recipe A, the default) the
option letter of one question per clip; ``dense`` (recipe B, :mod:`flowkit.smol_video.training.dense`)
a multi-turn conversation per clip — the same question first, further questions,
then a caption written from the generator's scene — with the loss on every reply token.

Task names may also be the curriculum's easier variants (:mod:`flowkit.smol_video.training.curriculum`:
a lone object, no distractors), evaluated on their own fixed-seed samples.

Everything is resumable: ``<run>/checkpoint.pt`` holds the trainable weights, the
optimiser, the step and the data stream position; ``<run>/log.jsonl`` one line per log:
loss, training clips and single frames so far, training seconds so far (evaluation not
counted), seconds per step and samples per second over the window, evaluations.
"""

from __future__ import annotations

import json
import math
import signal
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flowkit.atomic_files import atomic_path
from flowkit.data import TASKS
from flowkit.data.synthetic import EVAL_SEED, generate
from flowkit.families.llava_next_video import LlavaNextVideoAdapter
from flowkit.smol_video.training.budget import samples_seen
from flowkit.smol_video.training.clips import at_model_frames, frame_sample, video_sample
from flowkit.smol_video.training.frames import FRAME_TASKS
from flowkit.smol_video.training.lora import add_lora, lora_parameters

#: what a training step learns from: recipe A (one option letter per clip) or recipe B (dense.py)
SUPERVISIONS = ("letters", "dense")


@dataclass
class TrainConfig:
    stage: str = "align"  # "embed" (stage 0) | "align" (stage 1) | "video" (stage 2)
    steps: int = 500
    batch_size: int = 8
    lr_vision: float = 1e-4
    lr_lora: float = 1e-3
    lora_rank: int = 8
    seed: int = 1
    video_tasks: tuple[str, ...] = TASKS
    frame_tasks: tuple[str, ...] = FRAME_TASKS
    frame_batch_every: int = 4  # stage 2: every n-th batch is single-frame
    eval_every: int = 100
    eval_per_task: int = 16
    log_every: int = 10
    init_from: str | None = None  # a run folder whose weights start this run
    warmup: int = 30
    base: str | None = None  # a checkpoint folder to start from (default: the SmolLM2 assembly)
    positions: bool = False  # stage 0: objects anywhere, their place in words too (see stage0)
    supervision: str = "letters"  # "letters" (recipe A) | "dense" (recipe B: questions + captions, dense.py)
    questions_per_clip: int = 3  # dense: the question plus this many minus one about the same clip
    captions: bool = True  # dense: end each conversation with a caption of the clip (or frame)
    caption_weight: float = 1.0  # dense: weight of answer-text and caption tokens against the letters
    eval_seed: int | None = None  # evaluate tasks on clips generated with this seed, not the shipped split
    eval_frame_per_task: int | None = None  # single-frame evaluation questions per task (default eval_per_task)
    device: str = "cpu"  # "cpu" or "cuda" (or "cuda:N"); evaluation runs there too
    workers: int = 0  # processes that build batches ahead of the model (0: in the training process)
    minutes: float | None = None  # wall-clock budget: fit the schedule into it (see train())
    pool: str | None = None  # dense: a pre-rendered training pool folder to draw batches from (pool.py)
    layout: str | None = None  # video tokens per frame ("16") or frame size ("64x64"); None: the shipped 4
    freeze_projector_norm: bool = False  # normalise with fixed statistics (needed to start from a shipped delta)
    checkpoint_minutes: float | None = 45.0  # also checkpoint after this much wall time (None: at evaluations only)
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.seed == EVAL_SEED:
            raise ValueError(f"seed {EVAL_SEED} generates the evaluation split; train with another seed")
        if self.supervision not in SUPERVISIONS:
            raise ValueError(f"unknown supervision {self.supervision!r}; choose from: {' '.join(SUPERVISIONS)}")
        if self.supervision == "dense" and self.stage == "embed":
            raise ValueError("stage 0 (embed) never runs the language model; dense supervision needs align or video")
        if self.pool is not None and self.supervision != "dense":
            raise ValueError("a training pool holds dense conversations; use it with --supervision dense")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ValueError(f"unknown device {self.device!r}; use cpu, cuda or cuda:N")
        if self.questions_per_clip < 1:
            raise ValueError(f"questions_per_clip must be at least 1, got {self.questions_per_clip}")
        if self.eval_seed is not None and self.eval_seed in (EVAL_SEED, self.seed):
            raise ValueError(
                f"eval_seed {self.eval_seed} must differ from the shipped split's seed {EVAL_SEED} "
                f"and from the training seed {self.seed}"
            )
        if self.layout is not None:
            from flowkit.smol_video.assembly import layout_named

            layout_named(self.layout)  # refuses an unknown layout now, not after the model is built
        self.video_tasks = tuple(self.video_tasks)
        self.frame_tasks = tuple(self.frame_tasks)
        from flowkit.smol_video.training.curriculum import CURRICULUM_FRAME_TASKS, CURRICULUM_VIDEO_TASKS

        for kind, given, known in (
            ("video", self.video_tasks, TASKS + CURRICULUM_VIDEO_TASKS),
            ("frame", self.frame_tasks, FRAME_TASKS + CURRICULUM_FRAME_TASKS),
        ):
            unknown = [t for t in given if t not in known]
            if unknown:
                raise ValueError(f"unknown {kind} task(s) {unknown}; choose from: {' '.join(known)}")


class ProjectorNorm(nn.Module):
    """BatchNorm over the channels of the projected video tokens (folded away on export).

    ``frozen``: always normalise with the running statistics (as in eval mode), never with the
    batch's, and train nothing here: a warm start from a shipped delta, whose norm is already
    folded into the projector, sets it to the identity this way (:func:`delta_as_trainable_state`)."""

    def __init__(self, dim: int, frozen: bool = False):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, momentum=0.01)
        self.frozen = frozen
        if frozen:
            self.norm.requires_grad_(False)

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.frozen:
            n = self.norm
            out = nn.functional.batch_norm(flat, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)
        else:
            out = self.norm(flat)
        return out.reshape(shape)


class Trainable(nn.Module):
    """The HF model plus the training-only parts (projector norm, LoRA)."""

    def __init__(self, model, lora_rank: int | None, frozen_norm: bool = False):
        super().__init__()
        self.model = model
        dim = model.config.text_config.hidden_size
        self.projector_norm = ProjectorNorm(dim, frozen=frozen_norm)
        # start the normalised tokens at the scale of SmolLM2's word embeddings (about 3.2)
        embed_norm = float(model.model.language_model.get_input_embeddings().weight.norm(dim=-1).mean())
        with torch.no_grad():
            self.projector_norm.norm.weight.fill_(embed_norm / math.sqrt(dim))
        self._hook = model.model.multi_modal_projector.register_forward_hook(
            lambda _m, _i, out: self.projector_norm(out)
        )
        self.lora_targets = add_lora(model.model.language_model, rank=lora_rank) if lora_rank else []

    def vision_parameters(self):
        m = self.model.model
        norm = [] if self.projector_norm.frozen else list(self.projector_norm.parameters())
        return list(m.vision_tower.parameters()) + list(m.multi_modal_projector.parameters()) + norm

    def trainable_state(self) -> dict[str, torch.Tensor]:
        keep = ("vision_tower", "multi_modal_projector", "projector_norm", "lora_")
        return {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items() if any(s in k for s in keep)}

    def last_logits(self, batch) -> torch.Tensor:
        out = self.model.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values_videos=batch["pixel_values_videos"],
        )
        hidden = out.last_hidden_state
        last = batch["attention_mask"].sum(1) - 1
        return self.model.lm_head(hidden[torch.arange(hidden.shape[0]), last])


def base_checkpoint(layout=None) -> Path:
    """The untrained assembly (SmolLM2 + fresh vision side), built once into the cache.

    ``layout`` (a :class:`~flowkit.smol_video.assembly.Layout` or its name) sets the frame size
    and pooling; the shipped layout's folder is ``smol-video-base``, another's is named by it."""
    from flowkit.smol_video import assemble
    from flowkit.smol_video.assembly import SHIPPED_LAYOUT, layout_named
    from flowkit.smol_video.smollm2 import cache_dir

    layout = layout_named(layout)
    name = (
        "smol-video-base"
        if layout == SHIPPED_LAYOUT
        else f"smol-video-base-{layout.frame_size}px-s{layout.pool_stride}"
    )
    folder = cache_dir() / name
    if not (folder / "config.json").exists():
        assemble(folder, seed=0, metadata={"stage": "base (untrained vision side)"}, layout=layout)
    return folder


def collate(processor, samples, adapter=None) -> dict:
    """Pad a list of samples into one right-padded batch with answer targets."""
    adapter = adapter or LlavaNextVideoAdapter()
    prepared = [
        adapter.prepare(processor, s.frames, s.question, s.candidates, answer_index=s.answer_index) for s in samples
    ]
    n = max(p.seq_len for p in prepared)
    pad = processor.tokenizer.pad_token_id or 0
    ids = torch.full((len(prepared), n), pad, dtype=torch.long)
    mask = torch.zeros((len(prepared), n), dtype=torch.long)
    for i, p in enumerate(prepared):
        ids[i, : p.seq_len] = p.inputs["input_ids"][0]
        mask[i, : p.seq_len] = 1
    targets = torch.tensor([p.letter_ids[s.answer_index] for p, s in zip(prepared, samples)])
    letters = [list(p.letter_ids) for p in prepared]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values_videos": torch.cat([p.inputs["pixel_values_videos"] for p in prepared]),
        "targets": targets,
        "letter_ids": letters,
        "tasks": [s.task for s in samples],
    }


def batch_samples(config: TrainConfig, step: int) -> list:
    """The samples of one step: a pure function of (seed, step), so resuming is exact."""
    rng = np.random.default_rng([config.seed, step])
    single_frame = config.stage == "align" or (config.frame_batch_every and step % config.frame_batch_every == 0)
    if single_frame:
        tasks = [config.frame_tasks[int(rng.integers(len(config.frame_tasks)))] for _ in range(config.batch_size)]
        return [frame_sample(t, rng) for t in tasks]
    tasks = [config.video_tasks[int(rng.integers(len(config.video_tasks)))] for _ in range(config.batch_size)]
    return [video_sample(t, rng) for t in tasks]


def evaluation_sets(config: TrainConfig) -> dict[str, list]:
    """Held-out samples per task (the shipped split for tasks; a fixed seed for curriculum
    and single-frame tasks)."""
    from flowkit.data import shipped_questions
    from flowkit.smol_video.training.curriculum import CURRICULUM_VIDEO_TASKS

    sets: dict[str, list] = {}
    seed = EVAL_SEED if config.eval_seed is None else config.eval_seed
    for task in config.video_tasks:
        if task in CURRICULUM_VIDEO_TASKS:
            rng = np.random.default_rng([seed, 8])
            sets[task] = [video_sample(task, rng) for _ in range(config.eval_per_task)]
        elif config.eval_seed is not None:  # fresh clips, answers balanced, sampled to the model's frames
            sets[task] = [at_model_frames(s) for s in generate(task, config.eval_per_task, config.eval_seed)]
        else:  # the shipped split has the model's frame count (8) per question, decoded once per process
            sets[task] = [s for s in shipped_questions() if s.task == task][: config.eval_per_task]
    rng = np.random.default_rng([seed, 7])
    frame_count = config.eval_per_task if config.eval_frame_per_task is None else config.eval_frame_per_task
    for task in config.frame_tasks:
        sets[f"frame_{task}"] = [frame_sample(task, rng) for _ in range(frame_count)]
    return sets


def to_device(batch: dict, device) -> dict:
    """The batch with its tensors on ``device`` (lists and names stay as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def evaluation_batches(processor, sets: dict[str, list], batch_size: int = 16) -> dict[str, list]:
    """The evaluation sets collated once: ``{task: [(batch, answer indices), ...]}``."""
    return {
        task: [
            (collate(processor, samples[i : i + batch_size]), [s.answer_index for s in samples[i : i + batch_size]])
            for i in range(0, len(samples), batch_size)
        ]
        for task, samples in sets.items()
    }


@torch.no_grad()
def evaluate(
    trainable: Trainable, processor, sets: dict[str, list], batch_size: int = 16, batches: dict[str, list] | None = None
) -> dict[str, float]:
    """Accuracy per task: the option letter with the highest logit at the last position.

    ``batches`` (from :func:`evaluation_batches`) skips collating the same sets again."""
    batches = batches if batches is not None else evaluation_batches(processor, sets, batch_size)
    device = next(trainable.parameters()).device
    trainable.eval()
    accuracy = {}
    for task, chunks in batches.items():
        correct = total = 0
        for batch, answers in chunks:
            logits = trainable.last_logits(to_device(batch, device)).float().cpu()
            for row, (letters, answer) in enumerate(zip(batch["letter_ids"], answers)):
                correct += int(int(logits[row, letters].argmax()) == answer)
            total += len(answers)
        accuracy[task] = correct / max(1, total)
    trainable.train()
    return accuracy


class _StepBatches(torch.utils.data.Dataset):
    """Step ``i``'s collated batch (a pure function of the seed and ``i``), for worker processes."""

    def __init__(self, config: TrainConfig, processor, first: int, last: int):
        self.config, self.processor, self.first, self.last = config, processor, first, last

    def __len__(self):
        return self.last - self.first

    def __getitem__(self, index: int) -> dict:
        return step_batch(self.config, self.processor, self.first + index)


def step_batch(config: TrainConfig, processor, step: int) -> dict:
    """The collated batch of ``step`` for the run's supervision."""
    if config.supervision == "dense" and config.pool:
        from flowkit.smol_video.training.pool import pool_batch

        return pool_batch(config, processor, step)
    if config.supervision == "dense":
        from flowkit.smol_video.training.dense import conversation_batch
        from flowkit.smol_video.training.encoding import collate_conversations

        return collate_conversations(processor, conversation_batch(config, step))
    return collate(processor, batch_samples(config, step))


def _as_built(batch):
    return batch  # keep tuples and lists as the collate functions made them


def iter_batches(config: TrainConfig, processor, first: int, last: int):
    """Batches of steps ``first .. last-1`` in order; built ahead by ``config.workers`` processes."""
    if config.workers == 0:
        for step in range(first, last):
            yield step_batch(config, processor, step)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader = torch.utils.data.DataLoader(
        _StepBatches(config, processor, first, last),
        batch_size=None,
        shuffle=False,
        num_workers=config.workers,
        prefetch_factor=4,
        collate_fn=_as_built,
        pin_memory=config.device != "cpu",
    )
    yield from loader


def check_init_layout(config: TrainConfig, init_state: dict) -> None:
    """Refuse a warm start whose weights were trained for another layout than the one the run will
    build, when the run names no layout (and no base): it would be interpolated to the shipped grid
    without anyone asking for it."""
    if not init_state or config.layout is not None or config.base:
        return
    from flowkit.smol_video.assembly import SHIPPED_LAYOUT, layout_of

    trained_for = layout_of(init_state)
    if trained_for is not None and trained_for != SHIPPED_LAYOUT:
        raise ValueError(
            f"--init-from {config.init_from} was trained for {trained_for.describe()}, but no --layout was given, "
            f"which means the shipped layout ({SHIPPED_LAYOUT.describe()}): give --layout "
            f"{trained_for.tokens_per_frame} to keep its layout, or --layout {SHIPPED_LAYOUT.tokens_per_frame} "
            "to interpolate its position embeddings to the shipped grid"
        )


#: the running variance of the identity projector norm (:func:`delta_as_trainable_state`): with eps it is 1
IDENTITY_NORM_VARIANCE = 1.0 - 1e-5


def is_identity_norm(state: dict) -> bool:
    """Whether ``state``'s projector norm is the identity a shipped delta starts with and a frozen
    norm keeps (never saw a batch, running variance :data:`IDENTITY_NORM_VARIANCE`); a norm that
    merely never trained (stage 0's) has the default variance 1 and is not."""
    p = "projector_norm.norm."
    if p + "running_var" not in state or p + "num_batches_tracked" not in state:
        return False
    var = state[p + "running_var"].float()
    return int(state[p + "num_batches_tracked"]) == 0 and bool(
        torch.all(var == torch.tensor(IDENTITY_NORM_VARIANCE, dtype=torch.float32))
    )


def check_init_norm(config: TrainConfig, init_state: dict) -> None:
    """The projector norm and the warm start agree: ``--freeze-projector-norm`` needs a warm start
    (a fresh norm has no statistics to freeze), and a start whose norm never saw a batch (a shipped
    delta, or a run trained with a frozen norm) trains only with it frozen; one clear error otherwise."""
    if config.freeze_projector_norm and not config.init_from:
        raise ValueError(
            "--freeze-projector-norm keeps the statistics a warm start brings; give --init-from "
            "(a shipped delta, or a run trained with a frozen norm)"
        )
    if init_state and is_identity_norm(init_state) and not config.freeze_projector_norm:
        raise ValueError(
            f"--init-from {config.init_from} has a projector norm that never saw a batch (a shipped delta, whose "
            "norm is folded into the projector, or a run trained with a frozen norm): add --freeze-projector-norm"
        )


def check_init_delta(config: TrainConfig) -> None:
    """A warm start from a shipped delta trains with the LoRA rank of the delta's factors (its frozen
    norm is :func:`check_init_norm`'s): one clear error otherwise."""
    source = Path(config.init_from) if config.init_from else None
    if source is None or source.suffix != ".safetensors":
        return
    from safetensors import safe_open

    with safe_open(str(source), "pt") as handle:
        keys = list(handle.keys())
        if not is_delta(dict.fromkeys(keys)):
            return
        ranks = {handle.get_slice(k).get_shape()[0] for k in keys if k.endswith(".lora_a")}
    if ranks and ranks != {config.lora_rank}:
        raise ValueError(
            f"--init-from {source} has LoRA factors of rank {sorted(ranks)[0]}; give --lora-rank {sorted(ranks)[0]}"
        )


def build(config: TrainConfig):
    from transformers import AutoProcessor, LlavaNextVideoForConditionalGeneration

    folder = Path(config.base) if config.base else base_checkpoint(config.layout)
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder)
    for p in model.parameters():
        p.requires_grad_(False)
    init_state = load_trainable_state(config.init_from) if config.init_from else {}
    check_init_layout(config, init_state)
    check_init_delta(config)
    check_init_norm(config, init_state)
    if init_state:  # a warm start from another layout: its position embeddings interpolated to this grid
        from flowkit.smol_video.assembly import Layout, adapt_to_layout

        vision = model.config.vision_config
        init_state = adapt_to_layout(init_state, Layout(frame_size=vision.image_size, patch_size=vision.patch_size))
    if config.layout is not None and config.base:
        from flowkit.smol_video.assembly import layout_named

        wanted = layout_named(config.layout)
        vision = model.config.vision_config
        if (vision.image_size, vision.patch_size) != (wanted.frame_size, wanted.patch_size):
            raise ValueError(
                f"--layout {config.layout} asks for {wanted.describe()}, but the base checkpoint {folder} has "
                f"{vision.image_size}x{vision.image_size} frames and {vision.patch_size}x{vision.patch_size} patches"
            )
    # stage 0 never runs the language model: it adds no adapters, but keeps those it starts from
    with_lora = config.stage != "embed" or any("lora_" in k for k in init_state)
    trainable = Trainable(
        model, config.lora_rank if with_lora and config.lora_rank else None, frozen_norm=config.freeze_projector_norm
    )
    for p in trainable.vision_parameters():
        p.requires_grad_(True)
    for p in lora_parameters(model):
        p.requires_grad_(True)
    if config.init_from:
        missing = trainable.load_state_dict(init_state, strict=False)
        unexpected = [k for k in missing.unexpected_keys]
        if unexpected:
            raise RuntimeError(f"init_from has weights this model lacks: {unexpected[:5]}")
    return trainable, processor


def is_delta(state: dict) -> bool:
    """Whether ``state`` is a shipped delta (:func:`export_delta`: projector norm folded in, LoRA factors
    under ``lora::``) rather than a trainable state."""
    return not any(k.startswith("projector_norm.") for k in state) and any(
        k.startswith("model.vision_tower.") for k in state
    )


def delta_as_trainable_state(delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shipped delta as a trainable state: the same weights under the trainer's names and an
    identity projector norm (weight 1, bias 0, running mean 0, running variance 1 - eps, so that
    normalising with the running statistics changes nothing and exporting folds in a factor of
    exactly 1). Train it with ``freeze_projector_norm=True``, or the norm would use batch statistics."""
    out = {}
    for key, value in delta.items():
        if key == "lora::scale":
            continue
        name = key[len("lora::") :] if key.startswith("lora::") else key
        out["model." + name] = value.float() if value.is_floating_point() else value
    dim = out["model.model.multi_modal_projector.linear_2.bias"].shape[0]
    p = "projector_norm.norm."
    out[p + "weight"] = torch.ones(dim)
    out[p + "bias"] = torch.zeros(dim)
    out[p + "running_mean"] = torch.zeros(dim)
    out[p + "running_var"] = torch.full((dim,), IDENTITY_NORM_VARIANCE)
    out[p + "num_batches_tracked"] = torch.tensor(0)
    return out


def load_trainable_state(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Trainable weights from a run folder (``checkpoint.pt``), a committed snapshot (``.safetensors``)
    or a shipped delta (``delta.safetensors``, ``control.safetensors``: :func:`delta_as_trainable_state`)."""
    source = Path(source)
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(source).items()}
        return delta_as_trainable_state(state) if is_delta(state) else state
    return torch.load(source / "checkpoint.pt", weights_only=False)["trainable"]


def save_snapshot(run_dir: str | os.PathLike, path: str | os.PathLike) -> int:
    """Write a run's trainable weights (float16; BatchNorm statistics in float32) to ``path``,
    atomically, so that training on another machine can start from it (``--init-from path``)."""
    from safetensors.torch import save_file

    state = load_trainable_state(run_dir)
    keep32 = ("running_mean", "running_var", "num_batches_tracked")
    out = {
        k: (v if not v.is_floating_point() or k.endswith(keep32) else v.half()).contiguous() for k, v in state.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(out, str(tmp))
    return path.stat().st_size


def train(
    config: TrainConfig, run_dir: str | os.PathLike, progress: bool = True, stop_after: int | None = None
) -> dict:
    """Train (or resume) a run in ``run_dir``; returns the last evaluation.

    ``stop_after`` ends the run (with a checkpoint) after that step of its ``config.steps``-step
    learning-rate schedule; the same call without it resumes to the end.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU here; train with --device cpu")
    torch.manual_seed(config.seed)
    trainable, processor = build(config)  # refuses bad warm starts before the run folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.stage == "embed":
        return _train_embed(config, run_dir, trainable, processor, progress)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 matrix products
        torch.backends.cudnn.allow_tf32 = True
    trainable.to(device)
    groups = [{"params": [p for p in trainable.vision_parameters() if p.requires_grad], "lr": config.lr_vision}]
    if trainable.lora_targets:
        groups.append({"params": lora_parameters(trainable.model), "lr": config.lr_lora})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    base_lrs = [g["lr"] for g in groups]
    step, train_seconds = 0, 0.0
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location="cpu")
        earlier = ckpt.get("config", {}).get("supervision", "letters")
        if earlier != config.supervision:
            raise ValueError(
                f"{run_dir} holds a run with --supervision {earlier}; resume it with the same "
                f"supervision, or start {config.supervision} in another folder"
            )
        from flowkit.smol_video.assembly import layout_named

        earlier_layout = ckpt.get("config", {}).get("layout")
        if layout_named(earlier_layout) != layout_named(config.layout):
            raise ValueError(
                f"{run_dir} holds a run with --layout {earlier_layout or 'the shipped one'}; resume it with the "
                f"same layout, or start --layout {config.layout or 'the shipped one'} in another folder"
            )
        if bool(ckpt.get("config", {}).get("freeze_projector_norm", False)) != config.freeze_projector_norm:
            raise ValueError(
                f"{run_dir} holds a run with freeze_projector_norm={not config.freeze_projector_norm}; resume it "
                "with the same --freeze-projector-norm setting, or start in another folder"
            )
        trainable.load_state_dict(ckpt["trainable"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        train_seconds = float(ckpt.get("train_seconds", 0.0))
        pinned = ckpt.get("config", {}).get("notes", {}).get("pool_per_task")
        if config.pool and pinned:
            config.notes = {**config.notes, "pool_per_task": pinned}
    if config.pool:  # the pool's entries per task, pinned for resuming (a pool may grow later)
        from flowkit.smol_video.training.pool import open_pool, pool_sizes

        open_pool(config.pool).check_run(config, processor)
        config.notes = {**config.notes, "pool_per_task": pool_sizes(config)}
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    sets = evaluation_sets(config)
    eval_batches = evaluation_batches(processor, sets, batch_size=16 if device.type == "cpu" else 64)
    log = (run_dir / "log.jsonl").open("a")
    trainable.train()
    bar = tqdm(total=config.steps, initial=step, desc=f"train {config.stage}", disable=not progress)
    started, last_eval = time.time(), {}
    losses, parts, window_seconds, window_start = [], {}, 0.0, step
    last_step = config.steps if stop_after is None else min(config.steps, stop_after)
    # --minutes: time the first steps, then fix the schedule's length to what fits (logged and written
    # to config.json, so `--steps N` without --minutes repeats the schedule); past the budget, stop
    fit_at = step + min(config.warmup, 20) if config.minutes else None
    deadline = started + 60 * config.minutes if config.minutes else None
    batches = iter_batches(config, processor, step, last_step)
    timed_from, last_eval_step = None, None
    stop_requested, last_saved = [], time.time()
    previous_handlers = _stop_on_signals(stop_requested)
    try:
        while step < last_step:
            if deadline is not None and time.time() > deadline:
                log.write(json.dumps({"step": step, "event": "stopped: --minutes budget spent"}) + "\n")
                last_step = step
                break
            batch = to_device(next(batches), device)
            step_started = time.time()
            scale = min(1.0, (step + 1) / config.warmup) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
            for group, lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = lr * max(scale, 0.05)
            if config.supervision == "dense":
                from flowkit.smol_video.training.dense import dense_loss

                loss, step_parts = dense_loss(trainable, batch, config.caption_weight)
                for name, value in step_parts.items():
                    parts.setdefault(name, []).append(value)
            else:
                logits = trainable.last_logits(batch)
                loss = nn.functional.cross_entropy(logits.float(), batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            elapsed = time.time() - step_started
            train_seconds += elapsed
            window_seconds += elapsed
            bar.update(1)
            if fit_at is not None and step == fit_at - 5:
                timed_from = time.time()
            if fit_at is not None and step == fit_at:
                per_step = (time.time() - timed_from) / 5 if timed_from else elapsed
                overhead = 1.05  # evaluations and checkpoints: about 5 % on top of the steps (measured on a GPU)
                fitted = step + int(max(0.0, deadline - time.time()) / (per_step * overhead))
                config.steps = max(step + 1, min(config.steps, fitted))
                last_step = config.steps if stop_after is None else min(config.steps, stop_after)
                bar.total = config.steps
                (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
                log.write(
                    json.dumps(
                        {
                            "step": step,
                            "event": "schedule fitted to --minutes",
                            "steps": config.steps,
                            "seconds_per_step": round(per_step, 4),
                        }
                    )
                    + "\n"
                )
            if step % config.log_every == 0:
                seen, seen_before = samples_seen(config, step), samples_seen(config, window_start)
                window = sum(seen.values()) - sum(seen_before.values())
                record = {
                    "step": step,
                    "loss": sum(losses) / len(losses),
                    "seconds": time.time() - started,
                    "train_seconds": round(train_seconds, 3),
                    **seen,
                    "seconds_per_step": round(window_seconds / max(1, step - window_start), 4),
                    "samples_per_second": round(window / max(window_seconds, 1e-9), 4),
                }
                if parts:
                    record["loss_parts"] = {name: sum(v) / len(v) for name, v in parts.items()}
                losses, parts, window_seconds, window_start = [], {}, 0.0, step
                if step % config.eval_every == 0 or step == last_step:
                    eval_started = time.time()
                    last_eval = evaluate(trainable, processor, sets, batches=eval_batches)
                    last_eval_step = step
                    record["eval"] = last_eval
                    record["eval_seconds"] = round(time.time() - eval_started, 2)
                    _save(ckpt_path, trainable, optimizer, step, config, train_seconds)
                    last_saved = time.time()
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            if stop_requested or (
                config.checkpoint_minutes and time.time() - last_saved > 60 * config.checkpoint_minutes
            ):
                _save(ckpt_path, trainable, optimizer, step, config, train_seconds)
                last_saved = time.time()
                if stop_requested:
                    log.write(json.dumps({"step": step, "event": "stopped on request, checkpoint saved"}) + "\n")
                    log.flush()
                    break
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    batches.close()
    bar.close()
    if deadline is not None and last_eval_step != step and not stop_requested:
        last_eval = evaluate(trainable, processor, sets, batches=eval_batches)  # the stopping point's
        log.write(
            json.dumps(
                {
                    "step": step,
                    "train_seconds": round(train_seconds, 3),
                    **samples_seen(config, step),
                    "eval": last_eval,
                }
            )
            + "\n"
        )
    log.close()
    _save(ckpt_path, trainable, optimizer, step, config, train_seconds)
    if stop_requested:
        raise TrainingStopped(step, run_dir)
    return last_eval


class TrainingStopped(RuntimeError):
    """A run stopped on request (SIGTERM / SIGINT) after a step, with its checkpoint saved."""

    def __init__(self, step: int, run_dir):
        super().__init__(f"stopped after step {step} with a checkpoint in {run_dir}; run the same command to resume")
        self.step = step


def _stop_on_signals(flag: list) -> dict:
    """SIGTERM / SIGINT ask a run to stop after its current step, with a checkpoint (main thread only).
    Returns the handlers they replaced."""
    previous = {}

    def request(signum, _frame):
        flag.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, request)
        except ValueError:  # not the main thread: no handlers, a signal stops the run as before
            pass
    return previous


def _train_embed(config: TrainConfig, run_dir: Path, trainable, processor, progress: bool) -> dict:
    from flowkit.smol_video.training.stage0 import train_stage0

    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    started = time.time()
    losses = train_stage0(
        trainable,
        processor,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr_vision,
        seed=config.seed,
        progress=progress,
        positions=config.positions,
    )
    sets = {k: v for k, v in evaluation_sets(config).items() if k.startswith("frame_")}
    result = evaluate(trainable, processor, sets)
    with (run_dir / "log.jsonl").open("a") as log:
        for i in range(0, len(losses), config.log_every):
            chunk = losses[i : i + config.log_every]
            log.write(json.dumps({"step": i + len(chunk), "loss": sum(chunk) / len(chunk)}) + "\n")
        log.write(json.dumps({"step": config.steps, "seconds": time.time() - started, "eval": result}) + "\n")
    _save(
        run_dir / "checkpoint.pt",
        trainable,
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)]),
        config.steps,
        config,
    )
    return result


def _save(
    path: Path, trainable: Trainable, optimizer, step: int, config: TrainConfig, train_seconds: float = 0.0
) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "trainable": trainable.trainable_state(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "config": asdict(config),
                "train_seconds": train_seconds,
            },
            tmp,
        )


def export_delta(run: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The shippable delta of a run folder or a snapshot ``.safetensors``: vision tower, projector
    (norm folded in), LoRA factors with their scale (alpha 16 over the rank of the factors)."""
    state = load_trainable_state(run)
    delta = {}
    for key, value in state.items():
        if key.startswith("model.model.vision_tower.") or key.startswith("model.model.multi_modal_projector."):
            delta[key[len("model.") :]] = value
    # fold the BatchNorm (eval mode: an affine map per channel) into linear_2
    p = "projector_norm.norm."
    scale = state[p + "weight"] / torch.sqrt(state[p + "running_var"] + 1e-5)
    w, b = delta["model.multi_modal_projector.linear_2.weight"], delta["model.multi_modal_projector.linear_2.bias"]
    delta["model.multi_modal_projector.linear_2.weight"] = w * scale[:, None]
    delta["model.multi_modal_projector.linear_2.bias"] = (b - state[p + "running_mean"]) * scale + state[p + "bias"]
    lora = {key: value for key, value in state.items() if ".lora_a" in key or ".lora_b" in key}
    for key, value in lora.items():
        delta["lora::" + key[len("model.") :]] = value
    if lora:
        ranks = {v.shape[0] for k, v in lora.items() if k.endswith(".lora_a")}
        if len(ranks) != 1:
            raise ValueError(f"{run}: LoRA factors of several ranks {sorted(ranks)}")
        delta["lora::scale"] = torch.tensor(16.0 / ranks.pop())
    return delta
