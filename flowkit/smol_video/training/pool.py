"""A pre-rendered training pool for recipe B: conversations built once, stored compactly, reused.

Building a dense batch on the fly renders each clip, writes its captions and questions and
tokenizes the conversation; with a pool, a training step only gathers stored conversations,
inflates their frames and pads them (``bench/batch_throughput.py`` measures both). The pool is
built from **training seeds only**: :data:`~flowkit.data.synthetic.EVAL_SEED` (the shipped
split's) is refused, and a run refuses a pool built with its ``--eval-seed``.

Layout of a pool folder (put it under ``runs/``, which git ignores)::

    pool.json                    # settings: seed, questions per clip, captions, tokenizer fingerprint
    clip-<task>-00000.npz        # entries 0 .. shard_size-1 of a video task
    frame-<task>-00000.npz       # ... and of a single-frame task

Entry ``i`` of ``(kind, task)`` is a pure function of ``(seed, kind, task, i)``: its clip and
questions are drawn exactly as :func:`~flowkit.smol_video.training.dense.clip_conversation` /
:func:`~flowkit.smol_video.training.dense.frame_conversation` draw a training step's, from
random streams of their own. So building is resumable (missing shards are built, finished ones
kept; each is written atomically) and a pool can be grown later with more entries per task.

A shard holds, per entry, the frames at the generator's size (uint8, ``(8, 64, 64, 3)`` for a
clip, zlib-compressed: flat-coloured frames shrink about a hundredfold, ~0.6 KB a clip), the
conversation's tokens with the video as *one* placeholder token (uint16 where the vocabulary
fits) and their kinds (uint8), the option letters' places, and the turns as JSON. The model's
frame size and tokens per frame are applied when a batch is made (the processor resizes the
frames and the placeholder is expanded), so one pool serves 32x32 and 64x64 models alike.

Which entries a step gets (:func:`pool_batch`): the ``k``-th clip (or frame) of a run is entry
``order[k mod M]`` of an epoch order, a permutation (seeded by the training seed and the
epoch) of the run's tasks times the entries per task (the same count for every task, so the
tasks stay uniform). A batch is a pure function of ``(seed, step)``, so resuming is exact.
From the second epoch on, every answer's options are put in a fresh random order (as uniform
as the generators'), so a reused clip comes with new option letters; the clip, its questions
and its caption mean what they meant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flowkit.atomic_files import atomic_path, atomic_write_json
from flowkit.data.synthetic import EVAL_SEED

POOL_VERSION = 1
KINDS = ("clip", "frame")
#: seed-sequence tags: pool entries, the epoch order of a run, the option re-ordering of later epochs
_ENTRY_STREAM, _ORDER_STREAM, _SHUFFLE_STREAM = 23, 29, 31
_EXTRA_STREAM = 17


class PoolError(ValueError):
    """A pool that cannot serve this run (wrong seed, settings, tokenizer, or too few entries)."""


@dataclass(frozen=True)
class PoolSpec:
    """What a pool's entries are: the same in every shard, pinned in ``pool.json``."""

    seed: int
    questions_per_clip: int = 3
    captions: bool = True
    shard_size: int = 1024
    tokenizer: str = ""  # fingerprint of the tokenizer and chat template the tokens were made with
    version: int = POOL_VERSION

    def __post_init__(self):
        check_seed(self.seed)
        if self.shard_size < 1 or self.questions_per_clip < 1:
            raise PoolError("shard_size and questions_per_clip must be at least 1")


def check_seed(seed: int, eval_seed: int | None = None) -> None:
    if seed == EVAL_SEED:
        raise PoolError(f"seed {EVAL_SEED} generates the evaluation split; build training pools with another seed")
    if eval_seed is not None and seed == eval_seed:
        raise PoolError(
            f"the pool was built with seed {seed}, this run's --eval-seed: its clips would be the "
            "evaluation clips; build a pool with another seed"
        )


def tokenizer_fingerprint(processor) -> str:
    """A short hash of what the stored tokens depend on: the tokenizer, the chat template, the video token."""
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    text = "\n".join([vocab, str(processor.chat_template), str(processor.video_token)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _task_code(task: str) -> int:
    return zlib.crc32(task.encode())


def entry_conversation(spec: PoolSpec, kind: str, task: str, index: int):
    """Entry ``index`` of ``(kind, task)``: drawn as a training step draws one, from its own streams."""
    from flowkit.smol_video.training.dense import clip_conversation, frame_conversation

    key = [spec.seed, _ENTRY_STREAM, KINDS.index(kind), _task_code(task), index]
    rng, extra_rng = np.random.default_rng(key), np.random.default_rng(key + [_EXTRA_STREAM])
    make = clip_conversation if kind == "clip" else frame_conversation
    return make(task, rng, extra_rng, spec.questions_per_clip, spec.captions)


# ----------------------------------------------------------------------------- shards
def _shard_name(kind: str, task: str, shard: int) -> str:
    return f"{kind}-{task}-{shard:05d}.npz"


def _turns_json(conversation) -> str:
    turns = []
    for t in conversation.turns:
        if t.kind == "answer":
            turns.append({"q": t.question, "c": list(t.candidates), "a": t.answer_index})
        else:
            turns.append({"r": t.user, "t": t.reply})
    return json.dumps(turns, separators=(",", ":"))


def _blob(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).copy(), offsets


def build_shard(spec: PoolSpec, processor, kind: str, task: str, first: int, stop: int) -> dict[str, np.ndarray]:
    """The arrays of entries ``first .. stop-1`` of ``(kind, task)``."""
    from flowkit.smol_video.training.encoding import encoder_for

    encoder = encoder_for(processor)
    id_type = np.uint16 if len(processor.tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    frames, shapes, ids, kinds, letters, letter_counts, video_at, turns, task_labels = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    for index in range(first, stop):
        conversation = entry_conversation(spec, kind, task, index)
        encoded = encoder.encode(conversation)
        clip = np.ascontiguousarray(encoder.adapter.check_frames(conversation.frames))
        frames.append(zlib.compress(clip.tobytes(), 6))
        shapes.append(clip.shape)
        ids.append(encoded.ids.astype(id_type))
        kinds.append(encoded.kinds)
        letters.extend(encoded.letters)
        letter_counts.append(len(encoded.letters))
        video_at.append(encoded.video_at)
        turns.append(_turns_json(conversation).encode())
        task_labels.append(conversation.task)
    frame_blob, frame_offsets = _blob(frames)
    turn_blob, turn_offsets = _blob(turns)
    token_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    token_offsets[1:] = np.cumsum([len(x) for x in ids])
    letter_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    letter_offsets[1:] = np.cumsum(letter_counts)
    labels = {e for e in task_labels}
    if len(labels) != 1:
        raise PoolError(f"entries of {kind} task {task} name several tasks: {sorted(labels)}")
    return {
        "first": np.array(first),
        "task": np.array(labels.pop()),
        "frames": frame_blob,
        "frame_offsets": frame_offsets,
        "frame_shapes": np.asarray(shapes, dtype=np.int32),
        "ids": np.concatenate(ids),
        "kinds": np.concatenate(kinds),
        "token_offsets": token_offsets,
        "video_at": np.asarray(video_at, np.int32),
        "letters": np.asarray(letters, dtype=np.int32).reshape(-1, 3),
        "letter_offsets": letter_offsets,
        "turns": turn_blob,
        "turn_offsets": turn_offsets,
    }


class Shard:
    """One loaded shard: entries as :class:`~flowkit.smol_video.training.encoding.Encoded` plus frames."""

    def __init__(self, path: Path):
        with np.load(path) as data:
            self.arrays = {k: data[k] for k in data.files}
        self.task, self.first = str(self.arrays["task"]), int(self.arrays["first"])  # "frame_colour" for frames
        self.count = len(self.arrays["video_at"])

    def frames(self, i: int) -> np.ndarray:
        a = self.arrays
        raw = bytearray(zlib.decompress(a["frames"][a["frame_offsets"][i] : a["frame_offsets"][i + 1]].tobytes()))
        return np.frombuffer(raw, dtype=np.uint8).reshape(tuple(a["frame_shapes"][i]))  # writable: torch shares it

    def encoded(self, i: int):
        from flowkit.smol_video.training.encoding import Encoded

        a = self.arrays
        lo, hi = a["token_offsets"][i], a["token_offsets"][i + 1]
        letters = tuple(
            tuple(int(x) for x in row) for row in a["letters"][a["letter_offsets"][i] : a["letter_offsets"][i + 1]]
        )
        return Encoded(a["ids"][lo:hi].astype(np.int64), a["kinds"][lo:hi], int(a["video_at"][i]), letters, self.task)

    def turns(self, i: int) -> list[dict]:
        a = self.arrays
        return json.loads(a["turns"][a["turn_offsets"][i] : a["turn_offsets"][i + 1]].tobytes().decode())


# ----------------------------------------------------------------------------- the pool
class TrainingPool:
    """A pool folder opened for reading (shards are loaded on first use)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta = self.folder / "pool.json"
        if not meta.is_file():
            raise PoolError(
                f"{self.folder} is not a training pool (no pool.json); build one with "
                "`python -m flowkit.smol_video.training.pool build`"
            )
        self.spec = PoolSpec(**json.loads(meta.read_text()))
        if self.spec.version != POOL_VERSION:
            raise PoolError(f"{self.folder}: pool version {self.spec.version}, this code reads {POOL_VERSION}")
        self._shards: dict[tuple[str, str, int], Shard] = {}
        self._orders: dict[tuple, np.ndarray] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def count(self, kind: str, task: str) -> int:
        """Entries ``0 .. count-1`` of ``(kind, task)`` that the finished shards hold."""
        total, shard = 0, 0
        while (self.folder / _shard_name(kind, task, shard)).is_file():
            with np.load(self.folder / _shard_name(kind, task, shard)) as data:
                size = len(data["video_at"])
            total += size
            if size < self.spec.shard_size:
                break
            shard += 1
        return total

    def shard(self, kind: str, task: str, number: int) -> Shard:
        key = (kind, task, number)
        if key not in self._shards:
            self._shards[key] = Shard(self.folder / _shard_name(kind, task, number))
        return self._shards[key]

    def entry(self, kind: str, task: str, index: int):
        """``(encoded, frames, shard, row)`` of entry ``index``."""
        shard = self.shard(kind, task, index // self.spec.shard_size)
        row = index - shard.first
        return shard.encoded(row), shard.frames(row), shard, row

    def check_run(self, config, processor) -> None:
        """Refuse a pool that does not fit ``config`` (a :class:`TrainConfig`) and ``processor``."""
        check_seed(self.spec.seed, config.eval_seed)  # (the training seed only orders the entries: any is fine)
        if (config.questions_per_clip, config.captions) != (self.spec.questions_per_clip, self.spec.captions):
            raise PoolError(
                f"{self.folder} holds {self.spec.questions_per_clip} questions per clip, captions "
                f"{self.spec.captions}; this run asks for {config.questions_per_clip}, {config.captions}"
            )
        if tokenizer_fingerprint(processor) != self.spec.tokenizer:
            raise PoolError(
                f"{self.folder} was tokenized with another tokenizer or chat template than this "
                "model's; build a pool with this model's processor"
            )

    def order(self, kind: str, tasks: tuple[str, ...], seed: int, epoch: int, per_task: int) -> np.ndarray:
        """An epoch's order of the codes ``task index * per_task + entry`` (a seeded permutation)."""
        key = (kind, tasks, seed, per_task, epoch)
        if key not in self._orders:
            rng = np.random.default_rng([seed, _ORDER_STREAM, KINDS.index(kind), epoch])
            self._orders = {k: v for k, v in self._orders.items() if k[:4] != key[:4] or k[4] >= epoch - 1}
            self._orders[key] = rng.permutation(per_task * len(tasks))
        return self._orders[key]

    def per_task(self, kind: str, tasks: tuple[str, ...]) -> int:
        """Entries available for each of ``tasks`` (the least of their counts, so tasks stay uniform)."""
        counts = {task: self._counts.get((kind, task)) for task in tasks}
        for task, n in counts.items():
            if n is None:
                counts[task] = self._counts[(kind, task)] = self.count(kind, task)
        if min(counts.values()) == 0:
            raise PoolError(
                f"{self.folder} has no {kind} entries of {sorted(t for t, n in counts.items() if not n)}; "
                "build them with `python -m flowkit.smol_video.training.pool build`"
            )
        return min(counts.values())


_OPEN: dict[str, TrainingPool] = {}


def open_pool(folder: str | os.PathLike) -> TrainingPool:
    """The pool at ``folder``, opened once per process."""
    key = str(Path(folder).resolve())
    if key not in _OPEN:
        _OPEN[key] = TrainingPool(folder)
    return _OPEN[key]


def reshuffled(turns: list[dict], task: str, frames: np.ndarray, rng: np.random.Generator):
    """The stored conversation with every answer's options in a fresh uniform order."""
    from flowkit.smol_video.training.dense import Conversation, answer_turn, caption_turn

    out = []
    for turn in turns:
        if "q" in turn:
            options, answer = turn["c"], turn["c"][turn["a"]]
            candidates = [options[i] for i in rng.permutation(len(options))]
            out.append(answer_turn(turn["q"], candidates, candidates.index(answer)))
        else:
            out.append(caption_turn(turn["r"], turn["t"]))
    return Conversation(task, frames, tuple(out))


def pool_entries(config, step: int) -> tuple[str, list[tuple[str, int, int]]]:
    """The kind and ``(task, entry, epoch)`` of each row of ``step``'s batch (no pool I/O but the counts)."""
    from flowkit.smol_video.training.budget import samples_seen

    pool = open_pool(config.pool)
    single_frame = config.stage == "align" or (config.frame_batch_every and step % config.frame_batch_every == 0)
    kind = "frame" if single_frame else "clip"
    tasks = tuple(config.frame_tasks if single_frame else config.video_tasks)
    start = samples_seen(config, step)["frames" if single_frame else "clips"]
    per_task = pool_sizes(config)[kind]
    rows = []
    for k in range(start, start + config.batch_size):
        epoch, position = divmod(k, per_task * len(tasks))
        order = pool.order(kind, tasks, config.seed, epoch, per_task)
        task_index, entry = divmod(int(order[position]), per_task)
        rows.append((tasks[task_index], entry, epoch))
    return kind, rows


def pool_sizes(config) -> dict[str, int]:
    """Entries per task a run draws from, per kind: pinned in ``config.notes["pool_per_task"]`` when a
    run starts (:func:`~flowkit.smol_video.training.trainer.train` does), so that a pool grown
    later does not change the batches of a resumed run."""
    pool = open_pool(config.pool)
    pinned = dict(config.notes.get("pool_per_task") or {})
    sizes = {}
    for kind, tasks in (("clip", tuple(config.video_tasks)), ("frame", tuple(config.frame_tasks))):
        needed = (
            config.stage != "align" if kind == "clip" else config.stage == "align" or bool(config.frame_batch_every)
        )
        if not needed:
            continue
        available = pool.per_task(kind, tasks)
        if kind in pinned:
            if pinned[kind] > available:
                raise PoolError(
                    f"this run drew from {pinned[kind]} {kind} entries per task; {pool.folder} now holds {available}"
                )
            sizes[kind] = int(pinned[kind])
        else:
            sizes[kind] = available
    return sizes


def pool_batch(config, processor, step: int) -> dict:
    """Recipe B's batch at ``step``, from the pool ``config.pool`` (same format as
    :func:`~flowkit.smol_video.training.encoding.collate_conversations`)."""
    from flowkit.smol_video.training.encoding import encoder_for

    pool = open_pool(config.pool)
    encoder = encoder_for(processor)
    if getattr(encoder, "_pool_checked", None) != pool.folder:
        pool.check_run(config, processor)
        encoder._pool_checked = pool.folder
    kind, rows = pool_entries(config, step)
    encoded, clips = [], []
    for row, (task, index, epoch) in enumerate(rows):
        entry, frames, shard, at = pool.entry(kind, task, index)
        if epoch > 0:  # a reused entry: its options in a new order
            rng = np.random.default_rng([config.seed, _SHUFFLE_STREAM, KINDS.index(kind), epoch, step, row])
            entry = encoder.encode(reshuffled(shard.turns(at), entry.task, frames, rng))
        encoded.append(entry)
        clips.append(frames)
    return encoder.collate(encoded, clips)


# ----------------------------------------------------------------------------- building
def _build_one(args) -> str:
    folder, spec, kind, task, shard, stop = args
    processor = _WORKER_PROCESSOR
    first = shard * spec.shard_size
    arrays = build_shard(spec, processor, kind, task, first, min(stop, first + spec.shard_size))
    path = Path(folder) / _shard_name(kind, task, shard)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return path.name


_WORKER_PROCESSOR = None


def build_pool(
    folder: str | os.PathLike,
    processor,
    seed: int,
    *,
    clips_per_task: int = 0,
    frames_per_task: int = 0,
    video_tasks=None,
    frame_tasks=None,
    questions_per_clip: int = 3,
    captions: bool = True,
    shard_size: int = 1024,
    workers: int = 0,
    progress: bool = False,
) -> TrainingPool:
    """Build (or resume, or grow) the pool at ``folder``; returns it opened.

    ``clips_per_task`` entries of each of ``video_tasks`` (default: the question set's tasks) and
    ``frames_per_task`` of each of ``frame_tasks`` (default: the six single-frame tasks).
    A folder with a ``pool.json`` of other settings is refused."""
    from flowkit.data import TASKS
    from flowkit.smol_video.training.frames import FRAME_TASKS

    global _WORKER_PROCESSOR
    folder = Path(folder)
    spec = PoolSpec(
        seed=seed,
        questions_per_clip=questions_per_clip,
        captions=captions,
        shard_size=shard_size,
        tokenizer=tokenizer_fingerprint(processor),
    )
    meta = folder / "pool.json"
    if meta.is_file():
        existing = PoolSpec(**json.loads(meta.read_text()))
        if existing != spec:
            raise PoolError(
                f"{folder} holds a pool with other settings ({asdict(existing)}); "
                f"asked for {asdict(spec)}: build into another folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta, asdict(spec), indent=2)
    jobs = []
    for kind, tasks, per_task in (
        ("clip", video_tasks or TASKS, clips_per_task),
        ("frame", frame_tasks or FRAME_TASKS, frames_per_task),
    ):
        for task in tasks:
            for shard in range((per_task + shard_size - 1) // shard_size):
                path = folder / _shard_name(kind, task, shard)
                stop = min(per_task, (shard + 1) * shard_size)
                if path.is_file():
                    with np.load(path) as data:
                        if len(data["video_at"]) >= stop - shard * shard_size:
                            continue  # finished (a last shard that was short is rebuilt longer)
                jobs.append((str(folder), spec, kind, task, shard, per_task))
    _WORKER_PROCESSOR = processor
    try:
        if workers and len(jobs) > 1:
            import multiprocessing

            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            with multiprocessing.get_context("fork").Pool(workers) as mp:
                for i, name in enumerate(mp.imap_unordered(_build_one, jobs)):
                    if progress:
                        print(f"[{i + 1}/{len(jobs)}] {name}", file=sys.stderr)
        else:
            for i, job in enumerate(jobs):
                name = _build_one(job)
                if progress:
                    print(f"[{i + 1}/{len(jobs)}] {name}", file=sys.stderr)
    finally:
        _WORKER_PROCESSOR = None
    _OPEN.pop(str(folder.resolve()), None)
    return open_pool(folder)


def default_processor(base: str | None = None):
    """The processor whose tokenizer a pool is built with: ``base``'s, or the kit's model's."""
    if base:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(base)
    from flowkit.model.checkpoints import CHATML_VIDEO_TEMPLATE, llava_next_video_processor
    from flowkit.smol_video.assembly import FRAME_SIZE, PATCH_SIZE
    from flowkit.smol_video.smollm2 import video_tokenizer

    return llava_next_video_processor(video_tokenizer(), FRAME_SIZE, PATCH_SIZE, CHATML_VIDEO_TEMPLATE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.smol_video.training.pool",
        description="Build (or resume, or grow) a training pool for --supervision dense.",
    )
    parser.add_argument("folder", help="the pool folder (under runs/, which git ignores)")
    parser.add_argument("--seed", type=int, required=True, help=f"a training seed (never {EVAL_SEED})")
    parser.add_argument("--clips-per-task", type=int, default=4096)
    parser.add_argument("--frames-per-task", type=int, default=1024)
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--frame-tasks", nargs="+", default=None)
    parser.add_argument("--questions-per-clip", type=int, default=3)
    parser.add_argument("--no-captions", action="store_true")
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--base", default=None, help="a checkpoint folder whose processor tokenizes (default: the kit's)"
    )
    args = parser.parse_args(argv)
    try:
        pool = build_pool(
            args.folder,
            default_processor(args.base),
            args.seed,
            clips_per_task=args.clips_per_task,
            frames_per_task=args.frames_per_task,
            video_tasks=args.tasks,
            frame_tasks=args.frame_tasks,
            questions_per_clip=args.questions_per_clip,
            captions=not args.no_captions,
            shard_size=args.shard_size,
            workers=args.workers,
            progress=True,
        )
    except PoolError as error:
        parser.error(str(error))
    print(json.dumps({"folder": str(pool.folder), **asdict(pool.spec)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
