"""Sweeps sharded over a Ray cluster: same table as the local sweep, a lost worker costs one question.

One local Ray cluster serves the whole module: started by the ``ray_cluster`` fixture with
two CPU slots, bound to 127.0.0.1, no dashboard, usage statistics off and an 80 MB object
store, and shut down in its teardown. Every wait has a timeout (the executor's start and
question timeouts; pytest-timeout on each test).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from flowkit.analysis.distributed import RayExecutor, parse_address
from flowkit.intervention.spec import KnockoutSpec
from flowkit.analysis.sweep import make_executor, sweep, window_specs
from flowkit.analysis.sweep_work import ExecutorAddressError, ExecutorError, LocalExecutor, ModelSource

EDGE_GROUPS = ["cross_frame", "question->last"]
SIZE = 3  # windows of 3 layers on the 4-layer toy model: 2 edge groups x 4 centres = 8 specs per question
TEST_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def samples():
    from flowkit.data import generate

    return generate("moving_direction", 3, seed=7, num_frames=8, size=32) + generate(
        "scene_transition", 3, seed=7, num_frames=8, size=32
    )


@pytest.fixture(scope="module")
def local_table(toy_fp32, samples):
    return sweep(toy_fp32, samples, edge_groups=EDGE_GROUPS, size=SIZE, progress=False)


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-slot Ray cluster in this process (loopback only), shut down after the module."""
    import ray

    from flowkit.analysis.distributed import start_local_ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    start_local_ray(num_cpus=2, object_store_mb=80)
    try:
        assert ray.cluster_resources().get("CPU") == 2
        assert all(node["NodeManagerAddress"] == "127.0.0.1" for node in ray.nodes())
        yield
    finally:
        ray.shutdown()


def ray_executor(**options) -> RayExecutor:
    """The fixture's cluster, with timeouts on every wait."""
    return RayExecutor("auto", start_timeout_s=180, question_timeout_s=120, **options)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cache_records(root) -> dict[str, dict]:
    """``{cache file name: {spec json: record}}`` for every question file under a cache folder."""
    return {path.name: json.loads(path.read_text()) for path in sorted(root.rglob("*.json"))}


# ------------------------------------------------------------------ no cluster needed


@pytest.mark.parametrize(
    "address, parsed",
    [
        ("auto", ("auto", None, None)),
        ("local-ray:2", ("local-ray", None, 2)),
        ("ray://head-node:10001", ("client", "head-node", 10001)),
        ("10.0.0.5:6379", ("gcs", "10.0.0.5", 6379)),
    ],
)
def test_addresses_parse(address, parsed):
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address", ["gpu-cluster", "ray://head", "local-ray:0", "ray://head:99999", "http://x:1"])
def test_malformed_address_is_refused_at_once(address):
    with pytest.raises(ExecutorAddressError, match=re.escape(repr(address))) as info:
        make_executor(address)
    assert "local-ray:" in str(info.value)  # says what works


def test_local_is_the_default_and_needs_no_ray(toy_fp32, samples, local_table):
    assert isinstance(make_executor(), LocalExecutor) and isinstance(make_executor("local"), LocalExecutor)
    if "ray" not in sys.modules:  # nothing in this session imported Ray yet: a local sweep must not either
        again = sweep(toy_fp32, samples[:1], edge_groups=EDGE_GROUPS, size=SIZE, progress=False)
        assert "ray" not in sys.modules
        pd.testing.assert_frame_equal(again, local_table.iloc[: len(again)], check_exact=True)
    else:  # Ray was imported by an earlier test: check in a fresh interpreter
        code = (
            "import sys, flowkit.analysis.sweep, flowkit.cli, flowkit.analysis.distributed; "
            "flowkit.analysis.sweep.make_executor('local'); print('ray' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
        assert out.stdout.strip() == "False"


def test_model_source_of_a_loaded_model(toy_checkpoint, toy_fp32):
    source = ModelSource.of(toy_fp32)
    assert source == ModelSource(str(toy_checkpoint), quant="fp32", attn_implementation="sdpa")
    assert os.path.isabs(source.name_or_path) and not source.uses_gpu


@pytest.mark.parametrize("scheme", ["ray://", ""])
def test_bad_address_is_one_clear_error_before_any_work(toy_fp32, samples, tmp_path, scheme):
    address = f"{scheme}127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=re.escape(repr(address))) as info:
        sweep(
            toy_fp32,
            samples,
            edge_groups=EDGE_GROUPS,
            size=SIZE,
            cache=tmp_path / "cache",
            progress=False,
            executor=address,
        )
    assert time.monotonic() - started < 10
    assert "cannot reach the Ray cluster" in str(info.value)
    assert not (tmp_path / "cache").exists()  # nothing was computed or cached


def test_cli_bad_address(toy_checkpoint, tmp_path, capsys):
    from flowkit.cli import main

    address = f"ray://127.0.0.1:{closed_port()}"
    out = tmp_path / "table.csv.gz"
    started = time.monotonic()
    code = main(
        [
            "sweep",
            "--model",
            str(toy_checkpoint),
            "--quant",
            "fp32",
            "--questions",
            str(tmp_path / "nowhere"),
            "--executor",
            address,
            "--out",
            str(out),
        ]
    )
    assert code == 2 and time.monotonic() - started < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and address in err[0]
    assert not out.exists()


def test_cli_out_path_is_checked_first(tmp_path, capsys):
    from flowkit.cli import main

    assert main(["sweep", "--out", str(tmp_path / "missing" / "t.csv.gz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sweep", "--out", str(tmp_path / "t.parquet")]) == 2
    assert ".csv or .csv.gz" in capsys.readouterr().err


def test_fault_hook_exits_once(tmp_path, monkeypatch):
    import flowkit.analysis.distributed as distributed

    class Exited(Exception):
        pass

    def fake_exit(status):
        raise Exited(status)

    marker = tmp_path / "marker"
    monkeypatch.setenv("FLOWKIT_FAULT_EXIT_AT", "a/1, b/2")
    monkeypatch.setenv("FLOWKIT_FAULT_MARKER", str(marker))
    monkeypatch.setattr(distributed.os, "_exit", fake_exit)
    distributed.exit_if_fault_injected("a/0")  # not listed: goes on
    with pytest.raises(Exited, match=str(distributed.FAULT_EXIT_CODE)):
        distributed.exit_if_fault_injected("b/2")
    assert "b/2" in marker.read_text()
    distributed.exit_if_fault_injected("b/2")  # the marker is there: the retry goes on


# ------------------------------------------------------------------ on the local Ray cluster


@pytest.mark.slow  # with the cluster's start, these take ~100 s on 2 busy cores
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_sharded_sweep_equals_local_and_resumes_from_cache(ray_cluster, toy_fp32, samples, local_table, tmp_path):
    cache = tmp_path / "cache"
    table = sweep(
        toy_fp32, samples, edge_groups=EDGE_GROUPS, size=SIZE, cache=cache, progress=False, executor=ray_executor()
    )
    pd.testing.assert_frame_equal(table, local_table, check_exact=True)  # same rows, same numbers, bit for bit
    info = table.attrs["sweep"]
    assert info["workers"] == 2 and info["computed"] == len(samples) and info["workers_lost"] == 0

    files = sorted(cache.rglob("*.json"))
    stamps = {path: path.stat().st_mtime_ns for path in files}
    again = sweep(
        toy_fp32, samples, edge_groups=EDGE_GROUPS, size=SIZE, cache=cache, progress=False, executor=ray_executor()
    )
    pd.testing.assert_frame_equal(again, local_table, check_exact=True)
    assert again.attrs["sweep"]["computed"] == 0 and again.attrs["sweep"]["workers"] == 0  # nothing new, no worker
    assert {path: path.stat().st_mtime_ns for path in sorted(cache.rglob("*.json"))} == stamps


@pytest.mark.slow  # with the cluster's start, these take ~100 s on 2 busy cores
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_a_lost_worker_costs_one_retried_question(ray_cluster, toy_fp32, samples, local_table, tmp_path, monkeypatch):
    doomed = samples[2].id
    marker = tmp_path / "fault-marker"
    monkeypatch.setenv("FLOWKIT_FAULT_EXIT_AT", doomed)
    monkeypatch.setenv("FLOWKIT_FAULT_MARKER", str(marker))
    cache = tmp_path / "cache"
    table = sweep(
        toy_fp32, samples, edge_groups=EDGE_GROUPS, size=SIZE, cache=cache, progress=False, executor=ray_executor()
    )
    assert marker.exists() and doomed in marker.read_text()  # a worker really exited at that question
    info = table.attrs["sweep"]
    assert info["workers_lost"] == 1 and info["retried_questions"] == 1 and info["computed"] == len(samples)
    pd.testing.assert_frame_equal(table, local_table, check_exact=True)
    assert not table.duplicated(["sample", "edge_group", "center"]).any()

    # the cache holds every record exactly once: one file per question, one record per spec + the clean run
    expected = {spec.to_json() for _, _, spec in window_specs(EDGE_GROUPS, range(toy_fp32.num_layers), SIZE)}
    expected.add(KnockoutSpec().to_json())
    records = cache_records(cache)
    assert len(records) == len(samples)
    assert all(set(data) == expected for data in records.values())
    assert not list(cache.rglob(".tmp-*"))


@pytest.mark.slow  # with the cluster's start, these take ~100 s on 2 busy cores
@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_cli_sweep_on_ray_equals_local(ray_cluster, toy_checkpoint, tmp_path, capsys):
    """The command line, with only the workers loading the model (a ModelSource), writes the local table."""
    from flowkit.cli import main
    from flowkit.data import write_split

    bench = tmp_path / "bench"
    write_split(bench, seed=3, per_task=3, tasks=["moving_direction"], num_frames=8, size=32)
    common = [
        "sweep",
        "--model",
        str(toy_checkpoint),
        "--quant",
        "fp32",
        "--questions",
        str(bench),
        "--tasks",
        "moving_direction",
        "--per-task",
        "2",
        "--groups",
        "last->last",
        "video->last",
        "--centers",
        "1-2",
        "--size",
        "3",
        "--no-progress",
    ]
    assert main(common + ["--out", str(tmp_path / "local.csv.gz")]) == 0
    assert (
        main(
            common
            + [
                "--executor",
                "auto",
                "--num-workers",
                "2",
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "ray.csv.gz"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 questions: 2 computed, 0 from the cache" in out
    local = gzip.decompress((tmp_path / "local.csv.gz").read_bytes())
    assert gzip.decompress((tmp_path / "ray.csv.gz").read_bytes()) == local
    assert len(pd.read_csv(tmp_path / "ray.csv.gz")) == 2 * 2 * 2
    assert not list(tmp_path.glob(".*.tmp"))
