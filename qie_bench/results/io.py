"""Reading and writing result files: atomic writes, the append-only record log, JSON numbers.

A run directory holds:
- ``run.json``: what was planned (suite and case-set fingerprints, variants, items) and the
  environment fingerprint; written once at the start, atomically.
- ``cases.jsonl``: one record per case x variant x repeat, appended and fsynced as each finishes.
  Only the parent process writes it. A torn last line (the process was killed mid-write) is
  detected and discarded on read, never parsed as data.
- ``summary.json``: per-variant aggregates, written atomically at the end.
- ``images/<variant>/<case id>.png`` and ``logs/<variant>.stderr.log``.

Measurements carry their unit in their name (``_s``, ``_bytes``) and keep raw values
(every step time, every repeat) so later aggregation never has to trust an earlier one.
Absent measurements are ``null``, never 0: a CPU run has no VRAM figures.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserInputError

SCHEMA_VERSION = 1
RESULT_FILES = ("run.json", "cases.jsonl", "summary.json")


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: encode them as the strings "inf", "-inf", "nan" (PSNR of identical
    images is +inf and must survive a round trip, not turn into null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def from_json_number(value: Any) -> float | None:
    """Inverse of `json_safe` for one number."""
    if value is None:
        return None
    if isinstance(value, str):
        return float(value)
    return float(value)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see a
    half-written file, and a failure (disk full) leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a report or baseline is shared like any file
        # the user writes, so it gets the permissions their umask gives.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


class RecordLog:
    """Append-only `cases.jsonl`. Each record is one line, flushed and fsynced before the next
    item starts, so a kill loses at most the item in flight."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_records(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read `cases.jsonl`.

    Every record ends with a newline, so bytes after the last newline are a torn write (the
    process was killed mid-line): they are dropped — and with `repair`, truncated away so that
    appends continue cleanly. A complete line that is not a record is corruption: UserInputError.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    records: list[dict[str, Any]] = []
    for i, raw in enumerate(complete.splitlines()):
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or "key" not in rec or "status" not in rec:
            raise UserInputError(f"{path}:{i + 1}", "is not a valid record (the file is corrupted)",
                                 "re-run into a new --out directory") from None
        records.append(rec)
    if repair and len(complete) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    return records


def load_json_file(path: Path, what: str) -> dict[str, Any]:
    """Read a result JSON file with a schema version this code understands."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(str(path), f"{what} not found", "is this a qie-bench run directory?") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserInputError(str(path), f"{what} is not valid JSON ({err})", "the file is truncated or corrupted; re-run") from None
    if not isinstance(obj, dict) or "schema_version" not in obj:
        raise UserInputError(str(path), f"{what} has no schema_version", "not a qie-bench file")
    if obj["schema_version"] != SCHEMA_VERSION:
        raise UserInputError(str(path), f"{what} has schema_version {obj['schema_version']}; this qie-bench reads {SCHEMA_VERSION}",
                             "use the qie-bench version that wrote it")
    return obj


def schema_text(name: str) -> str:
    return resources.files("qie_bench").joinpath("schema", name).read_text()
