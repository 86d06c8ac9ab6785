"""Question sets on disk in the MVBench/TVBench layout: writing and loading.

Layout (relative to the question set root)::

    json/<task>.json        a JSON list of entries
    video/<task>/<file>     the clips the entries name

Each entry has ``video`` (file name inside ``video/<task>/``), ``question``,
``candidates`` (list of option texts) and ``answer`` (the correct option's
TEXT), and may have ``start``/``end`` in seconds (MVBench's trimmed tasks)
and any extra keys, which are ignored.  The shipped synthetic split in
``data/questions`` is written in exactly this layout by :func:`write_split`,
so it goes through the same loader as a real TVBench/MVBench download.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from flowkit.locations import data_path
from flowkit.data.sample import OPTION_LETTERS, QuestionSetError, Sample
from flowkit.data.synthetic import EVAL_SEED, TASKS, check_task, iter_samples
from flowkit.errors import VideoError
from flowkit.data.video import VIDEO_CODEC, VIDEO_FPS, check_num_frames, encoder_build, read_video, write_video

REQUIRED_KEYS = ("video", "question", "candidates", "answer")
_GENERATE_COMMAND = "python -m flowkit.data generate --out {out} --seed {seed} --per-task {per_task}"


def shipped_questions_root() -> Path:
    """The shipped evaluation split, ``data/questions`` (see :mod:`flowkit.locations`)."""
    root = data_path("questions")
    if not (root / "json").is_dir():
        raise QuestionSetError(
            "the shipped question set is missing from data/questions; regenerate it with "
            + _GENERATE_COMMAND.format(out="data/questions", seed=EVAL_SEED, per_task=60)
        )
    return root


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Entry:
    """One validated annotation, before its video is decoded."""

    sample_id: str
    index: int
    task: str
    video_path: Path
    question: str
    candidates: tuple[str, ...]
    answer_text: str
    start: float | None
    end: float | None


def available_tasks(root: str | Path) -> list[str]:
    """The task names of a question set, one per ``json/<task>.json``, in :data:`TASKS` order first."""
    root = Path(root)
    if not root.is_dir():
        raise QuestionSetError(
            f"question-set root does not exist: {root}; pass the folder holding json/ and video/ "
            "(e.g. a TVBench download or the output of `python -m flowkit.data generate`)"
        )
    json_dir = root / "json"
    if not json_dir.is_dir():
        raise QuestionSetError(
            f"question-set root {root} has no json/ folder; a question set needs json/<task>.json annotations "
            "next to video/<task>/ clips"
        )
    names = [path.stem for path in json_dir.glob("*.json")]
    return sorted(names, key=lambda name: (TASKS.index(name) if name in TASKS else len(TASKS), name))


@functools.lru_cache(maxsize=1)
def shipped_questions() -> tuple[Sample, ...]:
    """The kit's evaluation split (``data/questions``, 8 frames per question), decoded once per process."""
    return tuple(load_question_set(shipped_questions_root(), num_frames=8))


class QuestionSet(list):
    """The samples :func:`load_question_set` loaded (a plain list of :class:`Sample`), plus what it skipped.

    ``skipped`` holds one line per entry left out with ``skip_invalid=True``:
    ``"<json file>, entry <i>: <problem>"``; it is empty for a strict load.
    """

    def __init__(self, samples=(), skipped=()):
        super().__init__(samples)
        self.skipped: list[str] = list(skipped)

    def report(self) -> str:
        """A readable summary: how many loaded, and every skipped entry with its reason."""
        lines = [f"loaded {len(self)} question(s); skipped {len(self.skipped)}"]
        return "\n".join(lines + [f"  - {line}" for line in self.skipped])


class SkippedEntriesWarning(UserWarning):
    """``load_question_set(..., skip_invalid=True)`` left out entries; the message lists each one and why."""


def load_question_set(
    root: str | Path,
    task: str | Iterable[str] | None = None,
    num_frames: int = 8,
    size: int | None = None,
    skip_invalid: bool = False,
) -> QuestionSet:
    """Load a question set in the MVBench/TVBench layout as a list of :class:`Sample`.

    ``task`` is one task name, several, or ``None`` for every task found.
    Each clip is trimmed to ``[start, end]`` when the entry has them and
    sampled to ``num_frames`` frames with ``np.linspace(0, n - 1,
    num_frames).round()`` indices (a shorter clip repeats frames and warns,
    see :func:`~flowkit.data.video.read_video`); ``size`` optionally resizes
    frames to ``size x size``.  Sample ids are ``"<task>/<entry index:04d>"``.

    Every entry is checked in one pass, in entry order: its keys, options, answer and video
    file, then the decoding of its clip. By default any problem raises one
    :class:`QuestionSetError` that lists **every** bad entry of every task, whatever its
    problem (an annotation, a missing, empty or corrupt clip) and a task file that is not a
    JSON list, so a folder can be fixed in one pass. ``skip_invalid=True`` instead loads the
    good entries and leaves the bad ones (and any unreadable task file) out: the result's
    ``skipped`` lists them (``.report()`` prints them) and one :class:`SkippedEntriesWarning`
    says so.
    """
    root = Path(root)
    check_num_frames(num_frames)
    available = available_tasks(root)
    if task is None:
        tasks = available
    else:
        tasks = [task] if isinstance(task, str) else list(task)
        unknown = [name for name in tasks if name not in available]
        if unknown:
            raise QuestionSetError(
                f"unknown task(s) {', '.join(map(repr, unknown))} in {root / 'json'}; "
                f"available tasks: {', '.join(available) or '(none)'}"
            )
    loaded = QuestionSet()
    problems: dict[str, list[str]] = {}
    unreadable_files = 0
    for name in tasks:
        problems[name] = found = []
        json_path = root / "json" / f"{name}.json"
        try:
            raw_entries = _read_task_file(json_path)
        except QuestionSetError as error:
            found.append(f"{error}{' (the whole task is skipped)' if skip_invalid else ''}")
            unreadable_files += 1
            continue
        for index, raw in enumerate(raw_entries):
            try:
                entry = _validated_entry(root, name, json_path, index, raw)
            except QuestionSetError as error:  # the message names the file and the entry
                found.append(str(error))
                continue
            try:
                loaded.append(_decoded_sample(entry, num_frames, size))
            except (QuestionSetError, VideoError) as error:
                found.append(f"{json_path}, entry {index}: {error}")
    if not skip_invalid:
        _raise_if_any(problems, unreadable_files)
    loaded.skipped.extend(problem for found in problems.values() for problem in found)
    if loaded.skipped:
        warnings.warn(f"{root}: {loaded.report()}", SkippedEntriesWarning, stacklevel=2)
    return loaded


def _raise_if_any(problems: dict[str, list[str]], unreadable_files: int = 0) -> None:
    """One :class:`QuestionSetError` listing every problem of every task, if there is any."""
    bad = {name: found for name, found in problems.items() if found}
    if not bad:
        return
    entries = sum(map(len, bad.values())) - unreadable_files
    counts = []
    if entries:
        counts.append(f"{entries} bad entr{'y' if entries == 1 else 'ies'}")
    if unreadable_files:
        counts.append(f"{unreadable_files} unreadable task file{'' if unreadable_files == 1 else 's'}")
    listing = "\n".join(f"  - {problem}" for found in bad.values() for problem in found)
    tasks = ", ".join(map(repr, bad))
    raise QuestionSetError(
        f"{' and '.join(counts)} in task(s) {tasks}; fix them, or pass "
        f"skip_invalid=True to load the good ones and leave these out:\n{listing}"
    )


def _decoded_sample(entry: _Entry, num_frames: int, size: int | None) -> Sample:
    return Sample(
        id=entry.sample_id,
        task=entry.task,
        frames=read_video(entry.video_path, num_frames=num_frames, start=entry.start, end=entry.end, size=size),
        question=entry.question,
        candidates=entry.candidates,
        answer=OPTION_LETTERS[entry.candidates.index(entry.answer_text)],
        answer_text=entry.answer_text,
        video_path=str(entry.video_path),
    )


def _read_task_file(json_path: Path) -> list:
    """The raw entries of ``json/<task>.json``, or a :class:`QuestionSetError` saying why the file is unusable."""
    try:
        raw_entries = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise QuestionSetError(f"{json_path} is not valid JSON ({error}); fix or re-download it") from None
    except (OSError, UnicodeDecodeError) as error:
        raise QuestionSetError(f"{json_path} cannot be read ({error}); fix or re-download it") from None
    if not isinstance(raw_entries, list):
        raise QuestionSetError(
            f"{json_path} must hold a JSON list of entries, found a {type(raw_entries).__name__}; fix or re-download it"
        )
    return raw_entries


def _validated_entry(root: Path, task: str, json_path: Path, index: int, raw: object) -> _Entry:
    where = f"{json_path}, entry {index}"
    if not isinstance(raw, dict):
        raise QuestionSetError(
            f"{where}: expected an object with keys {list(REQUIRED_KEYS)}, found a {type(raw).__name__}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise QuestionSetError(f"{where}: missing required key(s) {missing}; present keys: {sorted(raw)}; add them")
    candidates, answer = raw["candidates"], raw["answer"]
    if not isinstance(candidates, list) or not all(isinstance(option, str) for option in candidates):
        raise QuestionSetError(f"{where}: 'candidates' must be a list of strings, got {candidates!r}")
    if len(candidates) < 2:
        raise QuestionSetError(
            f"{where}: 'candidates' has {len(candidates)} option(s) {candidates}; a multiple-choice "
            "question needs at least 2 options"
        )
    if len(set(candidates)) != len(candidates):
        raise QuestionSetError(f"{where}: 'candidates' contains duplicates {candidates}; each option must be unique")
    if answer not in candidates:
        raise QuestionSetError(
            f"{where}: answer {answer!r} is not among the candidates {candidates}; "
            "'answer' must be the text of one candidate"
        )
    if not isinstance(raw["question"], str) or not isinstance(raw["video"], str):
        raise QuestionSetError(f"{where}: 'question' and 'video' must be strings")
    bounds = {}
    for key in ("start", "end"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise QuestionSetError(f"{where}: {key!r} must be a number of seconds, got {value!r}")
        bounds[key] = None if value is None else float(value)
    if None not in bounds.values() and bounds["start"] > bounds["end"]:
        raise QuestionSetError(
            f"{where}: 'start' ({bounds['start']:g} s) is after 'end' ({bounds['end']:g} s); fix the entry's start/end"
        )
    video_path = root / "video" / task / raw["video"]
    if not video_path.is_file():
        raise QuestionSetError(
            f"{where}: video file not found: {video_path}; download or regenerate the clips into "
            f"{root / 'video' / task}"
        )
    return _Entry(
        sample_id=f"{task}/{index:04d}",
        index=index,
        task=task,
        video_path=video_path,
        question=raw["question"],
        candidates=tuple(candidates),
        answer_text=answer,
        start=bounds["start"],
        end=bounds["end"],
    )


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SplitSummary:
    """What :func:`write_split` wrote: where, how many questions per task, bytes and seconds."""

    root: Path
    counts: dict[str, int]
    num_bytes: int
    seconds: float

    @property
    def megabytes(self) -> float:
        return self.num_bytes / 1e6

    def __str__(self) -> str:
        width = max(len(name) for name in self.counts)
        lines = [f"wrote {self.root}"]
        lines += [f"  {name:<{width}}  {count:>5} questions" for name, count in self.counts.items()]
        lines.append(
            f"  {'total':<{width}}  {sum(self.counts.values()):>5} questions, "
            f"{self.megabytes:.2f} MB, {self.seconds:.1f} s"
        )
        return "\n".join(lines)


def write_split(
    out_dir: str | Path,
    seed: int = EVAL_SEED,
    per_task: int = 60,
    tasks: Iterable[str] | None = None,
    num_frames: int = 16,
    size: int = 64,
    overwrite: bool = False,
    progress: bool = False,
) -> SplitSummary:
    """Render a synthetic split and write it to ``out_dir`` in the MVBench/TVBench layout.

    Writes ``json/<task>.json``, ``video/<task>/<index:04d>.mp4`` (libx264,
    yuv420p, :data:`~flowkit.data.video.VIDEO_FPS` fps), a ``manifest.json``
    with the generation parameters and encoder versions, and a
    ``README.md``.  Nothing in the output depends on the clock or the
    machine beyond the PyAV/FFmpeg build, so the same arguments and build
    reproduce every file byte for byte.

    The split is built in a temporary folder next to ``out_dir`` and moved
    into place with ``os.replace`` only when complete: an interrupted call
    leaves neither a partial split nor the temporary folder behind.  An
    existing ``out_dir`` is replaced only with ``overwrite=True``, by two
    renames (old split aside, new split in); a crash exactly between them
    would leave the old split in a ``.<name>.old-*`` folder next to it.
    ``progress`` shows a tqdm bar.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    task_names = list(TASKS if tasks is None else tasks)
    for name in task_names:
        check_task(name)
    if not task_names or per_task < 1:
        raise QuestionSetError(
            f"nothing to write: need at least one task and per_task >= 1, got {task_names}, {per_task}"
        )
    if out_dir.exists() and not overwrite:
        raise QuestionSetError(
            f"{out_dir} already exists; pass overwrite=True (command line: --overwrite) to replace it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    split = staging / out_dir.name  # made by mkdir, so it gets the usual permissions (mkdtemp's are 0700)
    try:
        split.mkdir()
        with tqdm(total=len(task_names) * per_task, desc="rendering", unit="clip", disable=not progress) as bar:
            for name in task_names:
                _write_task(split, name, seed, per_task, num_frames, size, bar)
        counts = {name: per_task for name in task_names}
        parameters = {"seed": seed, "per_task": per_task, "num_frames": num_frames, "size": size}
        _write_text(split / "manifest.json", json.dumps(_manifest(parameters, counts), indent=2) + "\n")
        _write_text(split / "README.md", _readme(parameters, counts))
        _move_into_place(split, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    num_bytes = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
    return SplitSummary(out_dir, counts, num_bytes, time.perf_counter() - started)


def rendered_questions(
    seed: int, per_task: int, tasks: Iterable[str] | None = None, num_frames: int = 8
) -> tuple[Sample, ...]:
    """A fresh split, read exactly as the shipped one is read: rendered with ``seed``
    (:func:`write_split`, clips of 16 frames at 64x64), written as video in a temporary folder,
    decoded (``num_frames`` per question) and the folder removed. The same seed gives the same
    questions and frames on any machine with the same video encoder build. For a test that no
    training, search or selection has seen: pick a seed none of them used."""
    with tempfile.TemporaryDirectory(prefix="flowkit-split-") as folder:
        root = Path(folder) / f"seed-{seed}"
        write_split(root, seed=seed, per_task=per_task, tasks=tasks)
        return tuple(load_question_set(root, num_frames=num_frames))


def _write_task(split: Path, task: str, seed: int, per_task: int, num_frames: int, size: int, bar: tqdm) -> None:
    video_dir = split / "video" / task
    video_dir.mkdir(parents=True)
    entries = []
    for sample in iter_samples(task, per_task, seed, num_frames=num_frames, size=size):
        file_name = f"{sample.id.rsplit('/', 1)[1]}.mp4"
        write_video(video_dir / file_name, sample.frames, fps=VIDEO_FPS)
        entries.append(
            {
                "video": file_name,
                "question": sample.question,
                "candidates": list(sample.candidates),
                "answer": sample.answer_text,
            }
        )
        bar.update()
    (split / "json").mkdir(exist_ok=True)
    _write_text(split / "json" / f"{task}.json", json.dumps(entries, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _move_into_place(split: Path, out_dir: Path) -> None:
    """Swap the finished ``split`` folder in as ``out_dir``, replacing an old one."""
    if not out_dir.exists():
        os.replace(split, out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, retired)  # renaming onto the fresh, empty folder
    os.replace(split, out_dir)
    shutil.rmtree(retired)


def _manifest(parameters: dict[str, int], counts: dict[str, int]) -> dict[str, object]:
    return {
        "generator": "flowkit.data.synthetic",
        **parameters,
        "fps": VIDEO_FPS,
        "codec": VIDEO_CODEC,
        "encoder": encoder_build(),
        "counts": counts,
    }


def _readme(parameters: dict[str, int], counts: dict[str, int]) -> str:
    rows = "\n".join(f"| `{name}` | {count} |" for name, count in counts.items())
    command = _GENERATE_COMMAND.format(out="data/questions", **{k: parameters[k] for k in ("seed", "per_task")})
    if set(counts) != set(TASKS):
        command += " --tasks " + " ".join(counts)
    if (parameters["num_frames"], parameters["size"]) != (16, 64):
        command += f" --num-frames {parameters['num_frames']} --size {parameters['size']}"
    return f"""# Synthetic temporal question set

A fixed evaluation split of procedurally rendered multiple-choice video
questions that need time to answer: one frame at a random time carries no
information about the answer (see the docstrings in
`flowkit/data/synthetic.py`).  It uses the MVBench/TVBench layout, so
`flowkit.data.load_question_set` reads it exactly like a real TVBench download.

| task | questions |
| --- | ---: |
{rows}

* clips: {parameters["num_frames"]} frames of {parameters["size"]}x{parameters["size"]} RGB, \
{VIDEO_FPS} fps, {VIDEO_CODEC} mp4 (yuv420p)
* seed: {parameters["seed"]} (`flowkit.data.EVAL_SEED`); **train with other seeds**
* within a task each option letter is the correct one equally often, and so is each
  direction, count and cup position
* `json/<task>.json`: list of `{{video, question, candidates, answer}}`, `answer` is the option text
* `video/<task>/NNNN.mp4`: the clip of entry `NNNN`
* `manifest.json`: generation parameters and the encoder build

Regenerate (byte-identical with the encoder build named in `manifest.json`):

```
{command} --overwrite
```

Load:

```python
from flowkit.data import shipped_questions_root, load_question_set
samples = load_question_set(shipped_questions_root(), num_frames=8)
```
"""
