"""A model's fingerprint: what its checkpoint holds and how it computes — never where it was loaded from.

The fingerprint is part of every cache key and of every stored result, so it must be the
same for the same checkpoint on every machine and under every path or name, and differ
whenever the numbers can differ. It hashes:

- the checkpoint's files (every top-level file of its folder except documentation: weights,
  config, tokenizer and processor files), each by its SHA-256 — or, for a checkpoint the kit
  assembles itself, the identity it declares in ``flowkit.json`` (``content_sha256``: the
  hashes of the files it is assembled from), so rounding on the assembling machine cannot
  change it;
- the quantization settings (type, compute dtype, which modules stay in full precision);
- the numeric path (:func:`flowkit.model.nf4_cpu.numeric_path`): NF4's portable CPU arithmetic,
  its AVX512-BF16 kernel, bf16, fp32, CPU or GPU.

Hashing a 7B checkpoint reads about 15 GB once per process (tens of seconds); it happens only
when the fingerprint is first needed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: files of a checkpoint folder that do not change its numbers
_IGNORED_SUFFIXES = (".md", ".txt", ".png", ".jpg", ".lock")
_IGNORED_NAMES = {"LICENSE", "NOTICE", ".gitattributes"}
_CHUNK = 8 << 20
_file_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (memoised per process by path, size and modification time)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _file_hashes[key] = digest.hexdigest()
    return _file_hashes[key]


def checkpoint_identity(folder: str | os.PathLike) -> dict[str, str]:
    """What a checkpoint folder holds, as ``{file name: sha256}`` (or its declared ``content_sha256``)."""
    folder = Path(folder)
    declared = folder / "flowkit.json"
    if declared.is_file():
        content = json.loads(declared.read_text()).get("content_sha256")
        if content:
            return {"content_sha256": content}
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.name not in _IGNORED_NAMES
        and not p.name.startswith(".")
        and not p.name.endswith(_IGNORED_SUFFIXES)
    )
    if not files:
        raise FileNotFoundError(f"{folder} holds no checkpoint files to fingerprint")
    return {p.name: file_sha256(p) for p in files}


def model_fingerprint(folder: str | os.PathLike, quantization: dict, numeric_path: str) -> str:
    """16 hex digits identifying (checkpoint content, quantization settings, numeric path)."""
    payload = {"checkpoint": checkpoint_identity(folder), "quantization": quantization, "numeric_path": numeric_path}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The local folder a checkpoint was loaded from: the path itself, or the hub cache's snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(str(name_or_path), "config.json")
    except Exception:  # not a hub id, or no cache
        return None
    return Path(config).parent if isinstance(config, str) else None


__all__ = ["checkpoint_folder", "checkpoint_identity", "file_sha256", "model_fingerprint"]
