"""One JSONL output written by many processes: each appends its share to a part file, process 0 merges them.

Process p of P takes items p, p+P, p+2P, ... and appends finished records to `{output}.part-p-of-P` (with one
process, straight to `output`). Part files are `JsonlAppender`s, so a killed run resumes from them. When every
process is done, process 0 writes the records of all parts into `output` in the order the caller gives.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

import jax

from jaxprune.data.records import JsonlAppender, read_jsonl, write_jsonl_atomic

Item = TypeVar("Item")


class ProcessParts:
    """This process's share of the items and its part file of `output`."""

    def __init__(self, output: str):
        self.output = output
        self.index, self.count = jax.process_index(), jax.process_count()
        self.path = output if self.count == 1 else self.part_path(self.index)

    def part_path(self, index: int) -> str:
        return f"{self.output}.part-{index:05d}-of-{self.count:05d}"

    def mine(self, items: Sequence[Item]) -> list[Item]:
        return list(items[self.index::self.count])

    def appender(self, check=None) -> JsonlAppender:
        """This process's appender; `check` vets the records already there (`JsonlAppender`)."""
        return JsonlAppender(self.path, check)

    def merge(self, ids_in_order: Sequence[str]) -> None:
        """After all processes finished: process 0 writes every part's records into `output`, ordered by
        `ids_in_order` (records of other ids are dropped). A no-op with one process."""
        if self.count == 1:
            return
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxprune: all parts written")
        if self.index == 0:
            by_id: dict[str, dict[str, Any]] = {}
            for part in range(self.count):
                for _, record in read_jsonl(self.part_path(part)):
                    by_id[str(record["id"])] = record
            write_jsonl_atomic(self.output, [by_id[key] for key in ids_in_order if key in by_id])
        multihost_utils.sync_global_devices("jaxprune: parts merged")
