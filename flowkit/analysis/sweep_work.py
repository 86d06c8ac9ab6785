"""The work of a sweep: one question (:class:`QuestionJob`, :func:`evaluate_question`), the
model a worker loads (:class:`ModelSource`) and the local executor (:class:`LocalExecutor`).

:func:`flowkit.analysis.sweep.sweep` hands its questions to an executor: the local one here (this
process, no Ray, the default) or :class:`flowkit.analysis.distributed.RayExecutor`. Both evaluate a
question with :func:`evaluate_question`, so the table is the same, number for number.
An executor's ``session(model)`` gives an object with ``num_layers``, ``fingerprint`` and
``run(jobs, finished, replay)``, which calls ``finished(job, payloads)`` as each question is done.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence

from flowkit.errors import FlowkitError
from flowkit.intervention.spec import KnockoutSpec


class ExecutorError(FlowkitError, RuntimeError):
    """A sweep executor that cannot be reached, cannot start its workers, or lost a question for good."""


class ExecutorAddressError(ExecutorError, ValueError):
    """An executor address that is not one of the forms flowkit knows."""


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelSource:
    """What a worker loads: a checkpoint and the options of :func:`flowkit.load_videollm`.

    ``name_or_path`` must name the same checkpoint on every worker: a folder at the same
    path on every node (a shared filesystem), a hub id (each node downloads it), or a model
    the kit ships. ``device="cuda"`` gives each worker one GPU.
    """

    name_or_path: str
    quant: str = "nf4"
    device: str | None = None
    attn_implementation: str = "sdpa"
    nf4_cpu_kernel: str = "portable"
    bf16_cpu_arithmetic: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self):
        name = str(self.name_or_path)
        if Path(name).expanduser().exists():  # a folder here: the absolute path, the same for every worker
            name = str(Path(name).expanduser().resolve())
        object.__setattr__(self, "name_or_path", name)

    @classmethod
    def of(cls, vllm) -> ModelSource:
        """The source a loaded :class:`flowkit.VideoLLM` came from (its folder made absolute)."""
        if vllm.extra.get("checkpoint_folder") is None:
            raise ExecutorError(
                f"the model {vllm.name!r} was built in memory, so a worker cannot load it: save it "
                "(model.save_pretrained(DIR) and processor.save_pretrained(DIR)), load it with "
                "load_videollm(DIR) and sweep that, or pass a ModelSource."
            )
        name = str(vllm.name)
        first = next(vllm.model.parameters(), None)
        device = first.device.type if first is not None and first.device.type != "cpu" else None
        return cls(
            name_or_path=name,
            quant=vllm.quant,
            device=device,
            attn_implementation=getattr(vllm.model.config, "_attn_implementation", None) or "sdpa",
            **vllm.extra.get("load_options", {}),
        )

    @property
    def uses_gpu(self) -> bool:
        return bool(self.device) and str(self.device).split(":")[0] == "cuda"

    def load(self):
        """Load the model (:func:`flowkit.load_videollm`)."""
        from flowkit.model.videollm import load_videollm

        return load_videollm(
            self.name_or_path,
            self.quant,
            attn_implementation=self.attn_implementation,
            trust_remote_code=self.trust_remote_code,
            device=self.device,
            nf4_cpu_kernel=self.nf4_cpu_kernel,
            bf16_cpu_arithmetic=self.bf16_cpu_arithmetic,
        )


# ----------------------------------------------------------------------- the work unit


@dataclass(frozen=True)
class QuestionJob:
    """One question to evaluate: its position in the sweep, the sample, and the specs not yet cached."""

    index: int
    sample: object
    specs: tuple[KnockoutSpec, ...]


def evaluate_question(vllm, sample, specs: Sequence[KnockoutSpec], replay: bool = True) -> dict[str, dict]:
    """``{spec_json: answer payload}`` for the clean run and each spec on one question.

    The one place a sweep computes: the local executor and every Ray worker call it, so
    the two give the same numbers (same session, same batching). The clean run is built once
    and every spec is evaluated from it in batches.
    """
    session = vllm.session(sample, replay=replay)
    clean = session.clean_answer
    computed = session.answers(list(specs))
    fresh = {KnockoutSpec().to_json(): clean.to_dict()}
    for spec, dist in zip(specs, computed):
        fresh[spec.to_json()] = dist.to_dict()
    return fresh


# --------------------------------------------------------------------------- local


class LocalExecutor:
    """Evaluate every question in this process, one after the other (no Ray)."""

    address = "local"

    @contextlib.contextmanager
    def session(self, model) -> Iterator[_LocalSession]:
        yield _LocalSession(model.load() if isinstance(model, ModelSource) else model)


class _LocalSession:
    def __init__(self, vllm):
        self.vllm = vllm
        self.num_layers = vllm.num_layers

    @property
    def fingerprint(self) -> str:
        return self.vllm.fingerprint

    def run(self, jobs, finished: Callable, replay: bool = True) -> dict:
        for job in jobs:
            finished(job, evaluate_question(self.vllm, job.sample, job.specs, replay))
        return {"executor": "local", "workers": 1}


__all__ = ["ExecutorAddressError", "ExecutorError", "LocalExecutor", "ModelSource", "QuestionJob", "evaluate_question"]
