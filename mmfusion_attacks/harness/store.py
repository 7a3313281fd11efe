"""The results store: one JSON record per (experiment, cell, shard) under ``<out>/records/``, written
atomically, so a run killed at any point (SIGKILL included) and restarted recomputes only what has no
valid record.

Why files and ``os.replace`` rather than SQLite in WAL mode (docs/design.md): each record has exactly
one writer (the rank that owns its shard), so there is nothing to lock; a record is complete or absent
(``os.replace`` is atomic on POSIX, and the file is fsynced before it is renamed); ranks on several
nodes write to a shared folder (SQLite's locking is unreliable on NFS, which is where a cluster's
results live); and a record is a file a person can read.

A record is used only when it is whole and belongs to this run: its ``checksum`` (sha256 of its
canonical JSON) matches, and so do the cell's config hash, the shard's data fingerprint, the model's
fingerprint and the package version. Anything else (truncated, edited, written by other code, for
other data or another model) is reported by :meth:`ResultsStore.load` as invalid and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ResultsStore", "RecordKey", "canonical_json", "digest", "atomic_write_text"]

FORMAT = 1


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (and equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_default, allow_nan=True)


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a results record")


def digest(value: Any, length: int = 64) -> str:
    """sha256 of ``value``'s canonical JSON (hex, first ``length`` characters)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part:
    a temporary file in the same folder, flushed and fsynced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


RecordKey = tuple[str, str, int]  # (experiment, cell hash, shard)


class ResultsStore:
    """Records of one results folder. ``identity`` is what every record must carry to be reused (the
    package version; the engine adds each cell's config hash and each shard's data and model fingerprints)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records = self.root / "records"
        self.invalid: list[tuple[Path, str]] = []  # records found unusable by load(), with the reason

    def path(self, key: RecordKey) -> Path:
        experiment, cell, shard = key
        return self.records / _safe(experiment) / cell[:24] / f"shard-{shard:05d}.json"

    def save(self, key: RecordKey, identity: Mapping[str, Any], payload: Mapping[str, Any]) -> Path:
        body = {"format": FORMAT, "key": list(key), "identity": dict(identity), "payload": _finite(payload)}
        record = {**body, "checksum": digest(body)}
        path = self.path(key)
        atomic_write_text(path, canonical_json(record))
        return path

    def load(self, key: RecordKey, identity: Mapping[str, Any]) -> dict[str, Any] | None:
        """The payload of ``key``'s record when it is whole and its identity matches, else None (an
        unusable record is noted in :attr:`invalid` with why, and will be overwritten)."""
        path = self.path(key)
        if not path.is_file():
            return None
        reason = None
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            record, reason = None, f"unreadable ({type(exc).__name__}: {str(exc)[:80]})"
        if record is not None:
            if not isinstance(record, dict) or not {"format", "key", "identity", "payload", "checksum"} <= record.keys():
                reason = "not a results record"
            elif record["checksum"] != digest({k: record[k] for k in ("format", "key", "identity", "payload")}):
                reason = "checksum mismatch (edited or partly written)"
            elif record["format"] != FORMAT or record["key"] != list(key):
                reason = "written for another record or format"
            else:
                wanted = json.loads(canonical_json(dict(identity)))
                changed = sorted(k for k in set(wanted) | set(record["identity"]) if wanted.get(k) != record["identity"].get(k))
                if changed:
                    reason = f"stale: {', '.join(changed)} changed"
        if reason is not None:
            self.invalid.append((path, reason))
            return None
        return record["payload"]

    def keys(self) -> Iterator[Path]:
        yield from sorted(self.records.glob("*/*/shard-*.json"))


def _safe(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return out or "_"


def _finite(value: Any) -> Any:
    """NaN / inf -> strings, so the record is strict JSON and round-trips exactly."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def restore_floats(value: Any) -> Any:
    """Inverse of the NaN / inf encoding of saved payloads."""
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: restore_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_floats(v) for v in value]
    return value
