"""One JSONL output written by many processes: each appends its share to a part file, process 0 merges them.

Process p of P takes items p, p+P, p+2P, ... and appends finished records to `{output}.part-p-of-P` (with one
process, straight to `output`). Part files are `JsonlAppender`s, so a killed run resumes from them. When every
process is done, process 0 writes the records of all parts into `output` in the order the caller gives (with one
process, records that were appended out of that order, e.g. by chains pruned together, are put back in it).
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

import jax

from jaxprune import files
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
        `ids_in_order` (records of other ids are dropped). With one process, `output` is rewritten only if its
        records are out of that order, and records of other ids (an earlier run's) stay, after the others."""
        if self.count == 1:
            if files.is_file(self.output):
                records = [record for _, record in read_jsonl(self.output)]
                if len({str(record["id"]) for record in records}) < len(records):
                    return  # not one record per id: nothing to put in order
                wanted = set(map(str, ids_in_order))
                ordered = _in_order(records, ids_in_order) + [r for r in records if str(r["id"]) not in wanted]
                if ordered != records:
                    write_jsonl_atomic(self.output, ordered)
            return
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxprune: all parts written")
        if self.index == 0:
            records = [record for part in range(self.count) for _, record in read_jsonl(self.part_path(part))]
            write_jsonl_atomic(self.output, _in_order(records, ids_in_order))
        multihost_utils.sync_global_devices("jaxprune: parts merged")


def _in_order(records: Sequence[dict[str, Any]], ids_in_order: Sequence[str]) -> list[dict[str, Any]]:
    by_id = {str(record["id"]): record for record in records}
    return [by_id[key] for key in ids_in_order if key in by_id]
