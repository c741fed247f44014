"""JSONL records: the chain schema, reading with file:line:field errors, and crash-safe appending with resume.

A chain record (what the prune CLI reads) has `id`, `question`, `reasoning`, `answer` (strings) and optionally
`system`. Later stages add fields; a record keeps every field it came with.

Writers append one JSON line per record and fsync it, so a killed run loses at most the line being written; on
reopening, a torn last line is cut off and the ids already written are skipped by the caller. Paths may be local or
`gs://` (through `etils.epath`, see `jaxprune.files`; GCS appends are batched uploads, see `JsonlAppender`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, Iterator

from etils import epath

from jaxprune import files

CHAIN_FIELDS = ("id", "question", "reasoning", "answer")


class RecordError(ValueError):
    """A malformed input record; the message names the file, the line and the field."""


def read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields `(line_number, record)` for every non-empty line; a line that is not a JSON object is an error."""
    if not files.is_file(path):
        raise RecordError(f"{path}: no such file")
    with epath.Path(path).open("r") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RecordError(f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                raise RecordError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def check_fields(record: dict[str, Any], where: str, required: Iterable[str] = CHAIN_FIELDS,
                 optional: Iterable[str] = ("system",)) -> None:
    """Checks that required fields are present strings (ids may be numbers) and optional ones strings if present."""
    for field in required:
        if field not in record:
            raise RecordError(f"{where}: missing field '{field}'")
        value = record[field]
        allowed = (str, int) if field == "id" else (str,)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise RecordError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    for field in optional:
        if field in record and record[field] is not None and not isinstance(record[field], str):
            raise RecordError(f"{where}: field '{field}' must be a string, got {type(record[field]).__name__}")


def read_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(where, record)` rows of a local `.jsonl` file (`path:line`) or a `.parquet` file read through `datasets`
    (`path:row n`), e.g. chains packaged for the hub."""
    if path.endswith((".jsonl", ".json")):
        for number, record in read_jsonl(path):
            yield f"{path}:{number}", record
    elif path.endswith(".parquet"):
        import datasets

        for number, record in enumerate(datasets.load_dataset("parquet", data_files=path, split="train"), start=1):
            yield f"{path}:row {number}", record
    else:
        raise RecordError(f"{path}: expected a .jsonl or .parquet file")


def read_chains(path: str) -> list[tuple[str, dict[str, Any]]]:
    """Reads and validates a whole chain file (JSONL, or parquet) before any expensive work starts; ids must be
    unique.

    Returns `(where, record)` pairs, `where` being `path:line` for later error messages."""
    records, seen = [], {}
    for where, record in read_rows(path):
        check_fields(record, where)
        key = str(record["id"])
        if key in seen:
            raise RecordError(f"{where}: field 'id'={key!r} repeats {seen[key]}")
        seen[key] = where
        records.append((where, record))
    return records


class JsonlAppender:
    """Appends records to a JSONL file; reopening resumes after the last whole line.

    `check(record, where)` (optional) is called on every record already in the file, `where` being `path:line`,
    before anything is appended: it raises `RecordError` when the file was written by a run it must not be mixed with.
    `done_ids` holds the `id` of every record in the file (records without one, e.g. metrics, are simply kept).

    A local file gets an fsync per record, so a killed run loses at most the line being written. A `gs://` object
    cannot be appended to, so the appender keeps the file's lines and uploads the whole object again on the first
    append, then at most every `upload_every_s` seconds, and on close: an upload replaces the object whole (never a
    torn line), and a killed run loses at most the records of its last `upload_every_s` seconds, which a rerun redoes.
    """

    def __init__(self, path: str, check: Callable[[dict[str, Any], str], None] | None = None, *,
                 upload_every_s: float = 30.0):
        self.path = path
        self._local = files.is_local(path)
        self._lines: list[str] = []  # remote only: the whole file, uploaded again and again
        self._upload_every_s = upload_every_s
        self._uploaded_at = -float("inf")  # the first record goes up at once: a bad bucket fails early
        self._pending = False
        files.make_parent(path)
        self.done_ids = self._repair_and_collect_ids(check)
        self._file = epath.Path(path).open("a") if self._local else None

    def _repair_and_collect_ids(self, check) -> set[str]:
        if not files.exists(self.path):
            # Locally `open("a")` creates the file; a bucket object exists once uploaded, so upload it on close even
            # if nothing is appended (a process merging the parts of others expects every part).
            self._pending = not self._local
            return set()
        data = epath.Path(self.path).read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):  # a torn last line from a killed run (locally; uploads are whole)
            if self._local:
                os.truncate(self.path, whole)
            else:
                self._pending = True
        ids = set()
        for number, line in enumerate(data[:whole].decode("utf-8").splitlines(keepends=True), start=1):
            if not self._local:
                self._lines.append(line)
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise RecordError(f"{self.path}:{number}: not valid JSON ({error.msg}); this output was written "
                                      "by something else, or damaged: move it away to start over") from None
                if check is not None:
                    check(record, f"{self.path}:{number}")
                if "id" in record:
                    ids.add(str(record["id"]))
        return ids

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if self._local:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        else:
            self._lines.append(line)
            self._pending = True
            if time.monotonic() - self._uploaded_at >= self._upload_every_s:
                self._upload()
        if "id" in record:
            self.done_ids.add(str(record["id"]))

    def _upload(self) -> None:
        epath.Path(self.path).write_text("".join(self._lines))
        self._uploaded_at, self._pending = time.monotonic(), False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        elif self._pending:
            self._upload()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_jsonl_atomic(path: str, records: Iterable[dict[str, Any]]) -> None:
    """Writes a whole JSONL file under a temporary name, then renames it into place (`jaxprune.files`: on GCS the
    rename is a copy, and the target is still never torn)."""
    files.write_atomic(path, (json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def write_text_atomic(path: str, text: str) -> None:
    """Writes a whole text file under a temporary name, then renames it into place (local path or `gs://`)."""
    files.write_atomic(path, text)
