"""On-disk results keyed by (model fingerprint, sample id, spec JSON), written atomically.

One JSON file per (model, sample) holds a record per spec. Every record carries a
checksum of its own content; a file or record that does not parse or does not match
its checksum is reported and recomputed, never trusted. Every record also carries the
version of the knockout definitions it was computed under
(:data:`flowkit.intervention.edge_groups.DEFINITIONS_VERSION`); a record of another version is a miss
(recomputed and overwritten, without a warning), so numbers computed under an older
meaning of a token group are never reused.

The folder may sit on a filesystem shared by several machines (NFS and the like): every
write goes to a temporary file in the target folder and is renamed into place, which such
filesystems do atomically. A distributed sweep (:mod:`flowkit.analysis.distributed`) writes from its
driver only, one question's file at a time, as each question finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

from flowkit.atomic_files import atomic_write_json
from flowkit.intervention.edge_groups import DEFINITIONS_VERSION

#: payload key holding the definitions version a record was computed under
DEFINITIONS_KEY = "definitions_version"


class CorruptCacheWarning(UserWarning):
    """A cache file or record was unreadable or failed its checksum; it will be recomputed."""


def _checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _safe_name(text: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class ResultCache:
    """A folder of cached knockout results.

    >>> cache = ResultCache("results-cache")                          # doctest: +SKIP
    >>> cache.get(fingerprint, "moving_direction/0003", spec.to_json())
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, fingerprint: str, sample_id: str) -> Path:
        return self.root / _safe_name(fingerprint) / f"{_safe_name(sample_id)}.json"

    def _load(self, path: Path) -> dict:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except (OSError, ValueError) as exc:
            warnings.warn(
                f"cache file {path} is unreadable ({exc}); its results will be recomputed",
                CorruptCacheWarning,
                stacklevel=3,
            )
            return {}

    def get(self, fingerprint: str, sample_id: str, spec_json: str) -> dict | None:
        """The cached payload for this (model, sample, spec), or None if absent or corrupt."""
        path = self._path(fingerprint, sample_id)
        return self._checked(self._load(path).get(spec_json), fingerprint, sample_id, spec_json, path)

    def get_many(self, fingerprint: str, sample_id: str, spec_jsons) -> dict[str, dict | None]:
        """``{spec_json: payload or None}`` for one sample, reading its file once (same checks as :meth:`get`)."""
        path = self._path(fingerprint, sample_id)
        data = self._load(path)
        return {
            spec_json: self._checked(data.get(spec_json), fingerprint, sample_id, spec_json, path)
            for spec_json in spec_jsons
        }

    def _checked(self, record, fingerprint: str, sample_id: str, spec_json: str, path: Path) -> dict | None:
        if record is None:
            return None
        payload = record.get("payload") if isinstance(record, dict) else None
        if (
            not isinstance(payload, dict)
            or record.get("checksum") != _checksum(payload)
            or payload.get("fingerprint") != fingerprint
            or payload.get("sample") != sample_id
        ):
            warnings.warn(
                f"cache record for {sample_id} / {spec_json} in {path} failed its check; it will be recomputed",
                CorruptCacheWarning,
                stacklevel=3,
            )
            return None
        if payload.get(DEFINITIONS_KEY) != DEFINITIONS_VERSION:
            return None  # computed under other knockout definitions: recompute, never reuse
        return payload

    def put_many(self, fingerprint: str, sample_id: str, results: dict[str, dict]) -> None:
        """Store payloads ``{spec_json: payload}`` for one sample (one atomic file write).

        The file is written to a temporary name in the same folder and renamed over the old
        one, so a reader (or a sweep restarted after a crash) sees either the old file or the
        new one, never half of one. One writer per file at a time: a sweep writes each
        question's file from its driver only.
        """
        path = self._path(fingerprint, sample_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self._load(path)
        for spec_json, payload in results.items():
            payload = {**payload, "fingerprint": fingerprint, "sample": sample_id, DEFINITIONS_KEY: DEFINITIONS_VERSION}
            data[spec_json] = {"payload": payload, "checksum": _checksum(payload)}
        # fsync: on disk (or the file server) before the rename makes it visible to other workers
        atomic_write_json(path, data, fsync=True, sort_keys=True)
