"""Write files and folders all or nothing: a temporary file beside the target, renamed onto it when complete.

An interrupted or failed write leaves the previous file (or nothing) in place, never a
partial one. Every writer of results, caches, tables, checkpoints and deltas uses these.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def atomic_paths(paths: Mapping[str, str | os.PathLike] | list, *, fsync: bool = False) -> Iterator[list[Path]]:
    """Temporary paths beside each target; on success all are renamed onto their targets, on error all removed.

    ``paths`` is a list of target paths; the block writes the yielded temporary paths (same
    order). Files end up ``0o644``; ``fsync`` flushes each to disk before the rename (for
    files other processes read while they are written, e.g. a shared cache).
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            temps.append(Path(tmp))
        yield temps
        for tmp in temps:
            if fsync:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in zip(temps, targets):
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """One temporary path beside ``path``, renamed onto it when the block succeeds (see :func:`atomic_paths`)."""
    with atomic_paths([path], fsync=fsync) as (tmp,):
        yield tmp


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` to ``path`` all or nothing."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data, *, fsync: bool = False, **dump_kwargs) -> None:
    """Write ``data`` as JSON to ``path`` all or nothing (``dump_kwargs`` go to :func:`json.dumps`)."""
    atomic_write_text(path, json.dumps(data, **dump_kwargs), fsync=fsync)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``path``; when the block succeeds it replaces ``path`` (whole), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_csv_gz(path: str | os.PathLike, table) -> None:
    """Write a DataFrame to ``path`` as gzip-compressed CSV, byte-reproducible: floats as ``%.9g``, ``\n``
    line ends, no file name or time in the gzip header (same table, same bytes). Not atomic by itself:
    write to a temporary path of :func:`atomic_paths` and let it rename."""
    import gzip

    text = table.to_csv(index=False, float_format="%.9g", lineterminator="\n").encode()
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        packed.write(text)


__all__ = ["atomic_folder", "atomic_path", "atomic_paths", "atomic_write_json", "atomic_write_text", "write_csv_gz"]
