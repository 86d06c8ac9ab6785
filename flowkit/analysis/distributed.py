"""Sweeps on a Ray cluster: :class:`RayExecutor` (the local executor and the work unit are in
:mod:`flowkit.analysis.sweep_work`).

>>> sweep(vllm, samples, cache="results-cache")                                  # doctest: +SKIP
>>> sweep(vllm, samples, cache="/shared/results-cache", executor="auto")         # doctest: +SKIP
>>> sweep(ModelSource("llava-next-7b-video-ft", quant="nf4", device="cuda"), samples,
...       cache="/shared/results-cache", executor="ray://head-node:10001")       # doctest: +SKIP

The unit of work is one whole question. On Ray, each worker (an actor) loads the model
once, from a :class:`ModelSource` (the checkpoint and its load options, never the loaded
weights); for each question it runs the clean forward once and evaluates every missing spec
of that question through its :class:`flowkit.intervention.session.Session` — the same function, batching and
torch thread count as a local sweep (:func:`flowkit.analysis.sweep_work.evaluate_question`), so the table
is the same, number for number. Before any question is evaluated, every worker's model
fingerprint is checked against the driver's.

The driver keeps the result cache: records already there are never sent out, and each
question's records are written (atomically) the moment its worker returns them, so a sweep
stopped for any reason resumes from the cache. A worker that dies — a killed process, a
lost node, a question past ``question_timeout_s`` — loses only the question it was
evaluating: that question goes back in the queue, a fresh worker replaces the dead one, and
the next free worker takes it (at most ``max_attempts`` tries per question).

Executor addresses (:func:`flowkit.analysis.sweep.make_executor`):

``"local"``            this process, no Ray (the default; :class:`flowkit.analysis.sweep_work.LocalExecutor`)
``"auto"``             the Ray cluster this machine belongs to (``ray start`` was run here, or
                       ``RAY_ADDRESS`` is set), or the Ray connection this process already has
``"HOST:PORT"``        a cluster's head (GCS address, e.g. ``10.0.0.5:6379``); this machine
                       must be able to reach the cluster's nodes
``"ray://HOST:PORT"``  Ray Client (e.g. ``ray://head:10001``); needs ``grpcio``
                       (``pip install "ray[client]"``) and the same Ray and Python versions
                       on both sides
``"local-ray:N"``      start a throwaway Ray cluster on this machine with N CPU slots, bound
                       to the loopback interface, and stop it after the sweep

Fault injection (for tests and drills): a worker that starts evaluating the question whose
sample id is listed in ``FLOWKIT_FAULT_EXIT_AT`` (comma-separated) exits at once with
``os._exit`` — once per id: it first creates the marker file ``FLOWKIT_FAULT_MARKER``
(default: one per id in the temporary folder), and a worker that finds the marker goes on.
The driver forwards both variables (and ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``,
``TOKENIZERS_PARALLELISM``) from its own environment to every worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

from flowkit.analysis.sweep_work import ExecutorAddressError, ExecutorError, ModelSource, evaluate_question

#: environment variable: sample ids (comma-separated) at which a Ray worker exits, once each
FAULT_EXIT_AT_ENV = "FLOWKIT_FAULT_EXIT_AT"
#: environment variable: the marker file that makes the injected exit happen only once
FAULT_MARKER_ENV = "FLOWKIT_FAULT_MARKER"
#: the exit status of a worker stopped by the fault-injection hook
FAULT_EXIT_CODE = 75
#: variables the driver copies into every worker's environment
FORWARDED_ENV = (
    FAULT_EXIT_AT_ENV,
    FAULT_MARKER_ENV,
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)
#: object store of a ``local-ray:N`` cluster (MB): questions travel through it one at a time
LOCAL_OBJECT_STORE_MB = 80
#: seconds to wait for a TCP connection to a cluster address before calling it unreachable
CONNECT_TIMEOUT_S = 3.0

ADDRESS_FORMS = "'local', 'auto', 'local-ray:N', 'ray://HOST:PORT' or 'HOST:PORT'"


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """``(kind, host, number)``: kind is ``auto``, ``client``, ``gcs`` or ``local-ray`` (then number = CPU slots)."""
    text = address.strip()
    if text == "auto":
        return "auto", None, None
    match = re.fullmatch(r"local-ray:(\d+)", text)
    if match:
        slots = int(match.group(1))
        if slots < 1:
            raise ExecutorAddressError(
                f"executor {address!r}: a local Ray cluster needs at least one CPU slot (e.g. 'local-ray:2')."
            )
        return "local-ray", None, slots
    match = re.fullmatch(r"(ray://)?([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})", text)
    if match and 0 < int(match.group(3)) < 65536:
        return ("client" if match.group(1) else "gcs"), match.group(2).strip("[]"), int(match.group(3))
    raise ExecutorAddressError(
        f"unknown executor {address!r}: use {ADDRESS_FORMS} "
        "(e.g. 'ray://head-node:10001' for Ray Client, 'head-node:6379' for a cluster's head)."
    )


def _check_reachable(address: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = (
            f"no answer within {CONNECT_TIMEOUT_S:g} s"
            if isinstance(exc, TimeoutError)
            else (exc.strerror or str(exc)).lower()
        )
        hint = (
            "Ray Client listens on the head's --ray-client-server-port (10001 by default)"
            if address.startswith("ray://")
            else "a cluster's head listens on its --port (6379 by default)"
        )
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address!r} ({reason}). Check the host and port "
            f"({hint}), that the cluster is up (`ray status` on the head), and that no firewall "
            "is in the way; or run the sweep here with executor='local'."
        ) from None


def start_local_ray(num_cpus: int, object_store_mb: int = LOCAL_OBJECT_STORE_MB, log_to_driver: bool = False) -> None:
    """Start a Ray cluster inside this process: ``num_cpus`` slots, loopback only, no dashboard, no usage report.

    Stop it with ``ray.shutdown()``. This is what ``executor="local-ray:N"`` does; tests
    call it once and sweep with ``executor="auto"`` to reuse the cluster.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray binds to the machine's network address unless it believes it runs a single node
    # on a laptop; this switch (read when ray is imported) keeps every port on 127.0.0.1.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    with contextlib.suppress(ImportError, AttributeError):
        from ray._private import ray_constants

        if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
            ray_constants.ENABLE_RAY_CLUSTER = False  # ray was imported before the variable was set
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=object_store_mb * 1024 * 1024,
        _node_ip_address="127.0.0.1",
        log_to_driver=log_to_driver,
        configure_logging=False,
    )


# --------------------------------------------------------------------------- Ray


def exit_if_fault_injected(sample_id: str) -> None:
    """The fault-injection hook: exit this process if ``FLOWKIT_FAULT_EXIT_AT`` names ``sample_id`` (once)."""
    targets = [t.strip() for t in os.environ.get(FAULT_EXIT_AT_ENV, "").split(",") if t.strip()]
    if sample_id not in targets:
        return
    marker = os.environ.get(FAULT_MARKER_ENV) or str(
        Path(tempfile.gettempdir()) / f"flowkit-fault-exit-{hashlib.sha256(sample_id.encode()).hexdigest()[:12]}"
    )
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # this fault was injected already: go on
    os.write(fd, f"worker {os.getpid()} exited at {sample_id}\n".encode())
    os.close(fd)
    os._exit(FAULT_EXIT_CODE)


class SweepWorker:
    """The body of a Ray worker (one actor): loads the model once, then evaluates whole questions."""

    def __init__(self, source: ModelSource, torch_threads: int, env: dict[str, str]):
        os.environ.update(env)
        import torch

        torch.set_num_threads(torch_threads)
        self.vllm = source.load()
        self.info = {
            "fingerprint": self.vllm.fingerprint,
            "num_layers": self.vllm.num_layers,
            "numeric_path": self.vllm.numeric_path,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(),
        }

    def describe(self) -> dict:
        return self.info

    def evaluate(self, sample, specs, replay: bool = True) -> dict:
        exit_if_fault_injected(sample.id)
        started = time.perf_counter()
        payloads = evaluate_question(self.vllm, sample, specs, replay)
        return {
            "payloads": payloads,
            "fingerprint": self.info["fingerprint"],
            "pid": os.getpid(),
            "seconds": time.perf_counter() - started,
        }


def _lost_worker_errors() -> tuple[type, ...]:
    import ray.exceptions as rex

    names = (
        "RayActorError",
        "WorkerCrashedError",
        "ObjectLostError",
        "NodeDiedError",
        "ActorUnavailableError",
        "OutOfMemoryError",
    )
    return tuple(getattr(rex, name) for name in names if hasattr(rex, name))


class RayExecutor:
    """Shard a sweep over a Ray cluster, one whole question per task (see the module docstring).

    Args:
        address: ``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"`` or ``"local-ray:N"``.
        num_workers: workers to start (default: one per GPU — or CPU slot, for a CPU model —
            that the cluster has; never more than there are questions to compute).
        torch_threads: ``torch.set_num_threads`` in each worker (default: this process's, so
            the arithmetic is the local sweep's).
        max_attempts: tries per question before the sweep gives up on it.
        question_timeout_s: a question running longer is treated as a lost worker (the worker
            is killed and replaced, the question retried).
        start_timeout_s: how long workers may take to start and load the model.
        log_to_driver: show the workers' own output here.
    """

    def __init__(
        self,
        address: str,
        num_workers: int | None = None,
        torch_threads: int | None = None,
        max_attempts: int = 3,
        question_timeout_s: float | None = 4 * 3600.0,
        start_timeout_s: float = 1800.0,
        log_to_driver: bool = False,
    ):
        self.kind, self.host, self.number = parse_address(address)
        self.address = address.strip()
        if num_workers is not None and num_workers < 1:
            raise ExecutorError(f"num_workers must be at least 1, got {num_workers}")
        if max_attempts < 1:
            raise ExecutorError(f"max_attempts must be at least 1, got {max_attempts}")
        self.num_workers, self.torch_threads = num_workers, torch_threads
        self.max_attempts, self.question_timeout_s = max_attempts, question_timeout_s
        self.start_timeout_s, self.log_to_driver = start_timeout_s, log_to_driver
        self._opened = False  # True while this executor holds a connection it opened (closed by close())
        self.connect_seconds = 0.0  # how long connecting (or starting a local-ray:N cluster) took

    def __repr__(self) -> str:
        return f"RayExecutor({self.address!r}, num_workers={self.num_workers})"

    def connect(self) -> None:
        """Join the cluster (or start the local one); raises :class:`ExecutorError` naming the address if it cannot.

        Idempotent. A sweep connects by itself; call this first to check the address before
        other slow work (the command line does), then :meth:`close` when done.
        """
        if self._opened:
            return
        began = time.perf_counter()
        if self.kind in ("client", "gcs"):
            host, port = self.host, int(self.address.rsplit(":", 1)[1])
            _check_reachable(self.address, host, port)
        if self.kind == "client":
            try:
                import grpc  # noqa: F401  (Ray Client's transport)
            except ImportError:
                raise ExecutorError(
                    f"{self.address!r} is a Ray Client address, and Ray Client needs grpcio, which is not "
                    'installed: `pip install "ray[client]==<the cluster\'s Ray version>"`, or run the sweep on a '
                    "node of the cluster with executor='auto' (or the head's HOST:6379)."
                ) from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError:
            raise ExecutorError(
                f"executor {self.address!r} needs Ray: pip install ray (flowkit's setup installs it)."
            ) from None
        if ray.is_initialized():
            if self.kind == "auto":
                return  # the connection this process already has (e.g. a test's cluster) stays open
            raise ExecutorError(
                f"this process is already connected to a Ray cluster, so it cannot also use {self.address!r}: "
                "sweep with executor='auto' to use that connection, or call ray.shutdown() first."
            )
        try:
            if self.kind == "local-ray":
                start_local_ray(self.number, log_to_driver=self.log_to_driver)
            else:
                ray.init(address=self.address, log_to_driver=self.log_to_driver, configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types here; one clear error instead
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise ExecutorError(
                f"could not connect to the Ray cluster at {self.address!r}: "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                " — start it first (`ray start --head` on the head node) or check the address; "
                "executor='local' runs the sweep here."
            ) from exc
        self._opened = True
        self.connect_seconds = time.perf_counter() - began

    def close(self) -> None:
        """Disconnect (and stop a ``local-ray:N`` cluster) if :meth:`connect` opened the connection."""
        if self._opened:
            import ray

            self._opened = False
            ray.shutdown()

    @contextlib.contextmanager
    def session(self, model) -> Iterator[_RaySession]:
        """Workers for one sweep; they are stopped at the end, and a connection opened here is closed."""
        was_open = self._opened
        self.connect()
        session = None
        try:
            session = _RaySession(self, model)
            yield session
        finally:
            if session is not None:
                session.close()
            if not was_open:
                self.close()


@dataclass
class _Worker:
    handle: object
    number: int
    timed_out: bool = False


class _RaySession:
    """One sweep's workers on a connected cluster: started lazily, checked, replaced when lost."""

    def __init__(self, executor: RayExecutor, model):
        import ray
        import torch

        self.ray, self.executor = ray, executor
        self.threads = executor.torch_threads or torch.get_num_threads()
        self.env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        self.workers: list[_Worker] = []
        self.started_workers = 0
        self.start_seconds = 0.0
        if isinstance(model, ModelSource):
            self.source = model
            first = self._start(1)[0]  # the driver loads nothing: ask one worker what the model is
            info = ray.get(first.handle.describe.remote(), timeout=executor.start_timeout_s)
            self.fingerprint, self.num_layers = info["fingerprint"], info["num_layers"]
        else:
            self.source = ModelSource.of(model)
            self.fingerprint, self.num_layers = model.fingerprint, model.num_layers

    # ------------------------------------------------------------------ workers
    def _resources(self) -> dict:
        return {"num_gpus": 1, "num_cpus": 0} if self.source.uses_gpu else {"num_cpus": 1}

    def _offered(self) -> int:
        total = self.ray.cluster_resources()
        return int(total.get("GPU", 0) if self.source.uses_gpu else total.get("CPU", 0))

    def _spawn(self) -> _Worker:
        actor = self.ray.remote(SweepWorker).options(
            max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD", **self._resources()
        )
        self.started_workers += 1
        return _Worker(actor.remote(self.source, self.threads, self.env), self.started_workers)

    def _start(self, count: int) -> list[_Worker]:
        """Start ``count`` workers and wait until each has loaded the model and passed the fingerprint check."""
        unit = "GPU" if self.source.uses_gpu else "CPU slot"
        offered = self._offered()
        if offered < len(self.workers) + count:
            raise ExecutorError(
                f"the Ray cluster at {self.executor.address!r} offers {offered} {unit}(s) and a sweep worker needs "
                f"one each, so it cannot run {len(self.workers) + count} workers; ask for fewer (num_workers / "
                f"--num-workers){', or add GPUs (or load the model with device=None to run on CPUs)' if self.source.uses_gpu else ''}."
            )
        began = time.perf_counter()
        new = [self._spawn() for _ in range(count)]
        self.workers.extend(new)
        calls = {worker.handle.describe.remote(): worker for worker in new}
        deadline = time.monotonic() + self.executor.start_timeout_s
        while calls:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExecutorError(
                    f"{len(calls)} of {count} sweep worker(s) did not start within {self.executor.start_timeout_s:g} s "
                    f"(cluster resources now: {self.ray.available_resources()}); the model may be slow to load "
                    "(raise start_timeout_s) or the cluster busy."
                )
            ready, _ = self.ray.wait(list(calls), num_returns=1, timeout=min(left, 5.0))
            for ref in ready:
                calls.pop(ref)
                try:
                    info = self.ray.get(ref, timeout=60)
                except Exception as exc:  # noqa: BLE001 - a worker that cannot load the model
                    raise ExecutorError(
                        f"a sweep worker could not load {self.source.name_or_path!r} "
                        f"({self.source.quant}, device {self.source.device or 'cpu'}): "
                        f"{_first_lines(exc)}"
                    ) from None
                self._check_fingerprint(
                    info["fingerprint"], f"worker {info['pid']} on {info['host']}", info.get("numeric_path")
                )
        self.start_seconds += time.perf_counter() - began
        return new

    def _check_fingerprint(self, fingerprint: str, who: str, numeric_path: str | None = None) -> None:
        expected = getattr(self, "fingerprint", None)
        if expected is not None and fingerprint != expected:
            raise ExecutorError(
                f"{who} loaded {self.source.name_or_path!r} with fingerprint {fingerprint}"
                f"{f' (numeric path {numeric_path})' if numeric_path else ''}, but the driver's model is "
                f"{expected}: they would not give the same numbers. Make the same checkpoint reachable at the same "
                "path on every node and load it with the same quant and device kind (a GPU worker and a CPU driver "
                "differ), or pass a ModelSource so that only the workers load the model."
            )

    def _replace(self, worker: _Worker) -> _Worker | None:
        """Drop a lost worker; start a fresh one if the cluster still has room for it (a lost node may not)."""
        with contextlib.suppress(Exception):
            self.ray.kill(worker.handle, no_restart=True)
        self.workers.remove(worker)
        if self._offered() <= len(self.workers):
            if not self.workers:
                raise ExecutorError(
                    f"every sweep worker was lost and the Ray cluster at {self.executor.address!r} "
                    f"has no {'GPU' if self.source.uses_gpu else 'CPU slot'} left for a new one. "
                    "Finished questions are in the cache: run the same sweep again to resume."
                )
            return None  # go on with the workers that remain
        fresh = self._spawn()
        self.workers.append(fresh)
        return fresh

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                self.ray.kill(worker.handle, no_restart=True)
        self.workers.clear()

    # ------------------------------------------------------------------ the work
    def run(self, jobs, finished: Callable, replay: bool = True) -> dict:
        """Evaluate every job, calling ``finished(job, payloads)`` on the driver as each question is done."""
        from ray.exceptions import GetTimeoutError, RayTaskError

        stats = {
            "executor": self.executor.address,
            "workers": 0,
            "workers_lost": 0,
            "retried_questions": 0,
            "worker_seconds": 0.0,
            "roundtrip_seconds": 0.0,
            "start_seconds": 0.0,
            "connect_seconds": self.executor.connect_seconds,
        }
        if not jobs:
            stats["start_seconds"] = self.start_seconds
            return stats
        wanted = min(self.executor.num_workers or self._offered() or 1, len(jobs))
        if wanted > len(self.workers):
            self._start(wanted - len(self.workers))
        stats["workers"] = len(self.workers)
        lost_errors = _lost_worker_errors()
        pending = deque(jobs)
        attempts: dict[int, int] = {}
        idle = deque(self.workers)
        in_flight: dict[object, tuple[_Worker, object, float]] = {}
        while pending or in_flight:
            while pending and idle:
                worker, job = idle.popleft(), pending.popleft()
                attempts[job.index] = attempts.get(job.index, 0) + 1
                ref = worker.handle.evaluate.remote(job.sample, job.specs, replay)
                in_flight[ref] = (worker, job, time.monotonic())
            ready, _ = self.ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                worker, job, sent = in_flight.pop(ref)
                try:
                    result = self.ray.get(ref, timeout=60)
                except RayTaskError as exc:  # the question itself failed: retrying would fail the same way
                    cause = getattr(exc, "cause", None) or exc
                    raise ExecutorError(
                        f"question {job.sample.id} failed on a sweep worker: "
                        f"{type(cause).__name__}: {_first_lines(cause)}"
                    ) from None
                except lost_errors + (GetTimeoutError,) as exc:
                    stats["workers_lost"] += 1
                    reason = (
                        f"it ran past question_timeout_s={self.executor.question_timeout_s:g} s"
                        if worker.timed_out
                        else _first_lines(exc, 1)
                    )
                    if attempts[job.index] >= self.executor.max_attempts:
                        raise ExecutorError(
                            f"question {job.sample.id} was lost with its worker {attempts[job.index]} times "
                            f"(last: {reason}); giving up. The results of every finished question are in the "
                            "cache: fix the cause and run the same sweep again to resume."
                        ) from None
                    stats["retried_questions"] += 1
                    pending.appendleft(job)  # the whole question again, on the next free worker
                    fresh = self._replace(worker)
                    if fresh is not None:
                        idle.append(fresh)  # behind the idle survivors: the retry goes to another worker
                    continue
                self._check_fingerprint(result["fingerprint"], f"worker {result['pid']}")
                stats["worker_seconds"] += result["seconds"]
                stats["roundtrip_seconds"] += time.monotonic() - sent
                finished(job, result["payloads"])
                idle.append(worker)
            timeout = self.executor.question_timeout_s
            if timeout is not None:
                now = time.monotonic()
                for worker, _job, sent in in_flight.values():
                    if now - sent > timeout and not worker.timed_out:
                        worker.timed_out = True
                        with contextlib.suppress(Exception):
                            self.ray.kill(worker.handle, no_restart=True)  # its call now fails: handled above
        stats["start_seconds"] = self.start_seconds
        return stats


def _first_lines(exc: BaseException, lines: int = 3) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines()[:lines])


__all__ = [
    "ADDRESS_FORMS",
    "FAULT_EXIT_AT_ENV",
    "FAULT_EXIT_CODE",
    "FAULT_MARKER_ENV",
    "RayExecutor",
    "SweepWorker",
    "exit_if_fault_injected",
    "parse_address",
    "start_local_ray",
]
