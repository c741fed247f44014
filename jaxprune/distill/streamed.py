"""Training examples streamed through grain from chains read on demand (a TFDS ArrayRecord dataset), for corpora
that should not be rendered into memory whole. `train` takes `StreamedExamples` wherever it takes a list of
examples, and feeds it the same batches.

Order: grain's sampler is today's seeded per-epoch permutation (`train.epoch_permutation`), so step s's batch holds
the examples `example_indices` gives, in the same rows. Per-process shards: grain hands process p of P the sampler
indices g = i * P + p (its i-th element); the sampler maps that element to the data position of the batch row it
fills (step i // b, the process's (i % b)-th row, b being its rows per batch), so each process reads, renders and
pads only the rows its devices hold. The loader's position (grain's iterator state, a file per process) is saved in
every orbax checkpoint beside the parameters, and a resumed run continues from it.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Sharding

from jaxprune.distill.examples import Example
from jaxprune.distill.train import TrainConfig, epoch_permutation, make_batch, padded_length

Chains = Sequence[tuple[str, dict[str, Any]]]  # random access `(where, record)` pairs, e.g. `TfdsChains`


class StreamedExamples:
    """`to_example(record)` of every chain, rendered when a batch needs it rather than up front."""

    def __init__(self, chains: Chains, to_example: Callable[[dict[str, Any]], Example]):
        self.chains = chains
        self.to_example = to_example

    def __len__(self) -> int:
        return len(self.chains)

    def loader(self, config: TrainConfig, pad_id: int, batch_sharding: Sharding | None) -> "Loader":
        return Loader(self, config, pad_id, batch_sharding)


def process_rows(batch_size: int, max_length: int, batch_sharding: Sharding | None) -> list[list[int]]:
    """The batch rows each process's devices hold (every process the same number, as grain's even split needs)."""
    if batch_sharding is None:
        return [list(range(batch_size))]
    rows: list[set[int]] = [set() for _ in range(jax.process_count())]
    for device, index in batch_sharding.devices_indices_map((batch_size, max_length)).items():
        rows[device.process_index].update(range(*index[0].indices(batch_size)))
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"the batch of {batch_size} rows is split unevenly over the processes: "
                         f"{[len(r) for r in rows]} rows each")
    return [sorted(r) for r in rows]


class EpochSampler:
    """grain sampler: global index g -> the chain at the data position of the batch row that element fills."""

    def __init__(self, records: int, seed: int, batch_size: int, rows: list[list[int]], steps: int):
        self.records, self.seed, self.batch_size, self.rows, self.steps = records, seed, batch_size, rows, steps

    def __len__(self) -> int:
        # every process's elements for `steps` batches (processes may hold the same rows: more than the batch)
        return self.steps * len(self.rows[0]) * len(self.rows)

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is past the run's {self.steps} batches")
        process, element = index % len(self.rows), index // len(self.rows)
        rows = self.rows[process]
        position = element // len(rows) * self.batch_size + rows[element % len(rows)]
        epoch, offset = divmod(position, self.records)
        return grain.RecordMetadata(index=index, record_key=int(epoch_permutation(self.records, self.seed,
                                                                                  epoch)[offset]))

    def __repr__(self) -> str:
        # grain refuses to resume with a sampler of another repr: the order's settings, not `steps` (a rerun may
        # train longer, as with examples in memory)
        return (f"EpochSampler(records={self.records}, seed={self.seed}, batch_size={self.batch_size}, "
                f"rows={self.rows})")


class _PaddedRows(grain.transforms.Map):
    """A chain as `make_batch`'s three rows (tokens, loss mask, valid), so grain's Batch stacks the same batch."""

    def __init__(self, to_example: Callable[[dict[str, Any]], Example], max_length: int, pad_id: int):
        self._to_example, self._max_length, self._pad_id = to_example, max_length, pad_id

    def map(self, chain: tuple[str, dict[str, Any]]):
        _, record = chain
        return tuple(field[0] for field in make_batch([self._to_example(record)], np.zeros(1, int),
                                                      self._max_length, self._pad_id))


class Loader:
    """`next(loader)`: the next global batch as `train_step` takes it (placed on `batch_sharding`'s devices)."""

    def __init__(self, examples: StreamedExamples, config: TrainConfig, pad_id: int, batch_sharding):
        self._shape = (config.batch_size, config.max_length)
        self._sharding = batch_sharding
        self._rows = process_rows(*self._shape, batch_sharding)
        process, processes = (jax.process_index(), jax.process_count()) if batch_sharding is not None else (0, 1)
        self._process = process
        self._local = {row: i for i, row in enumerate(self._rows[process])}  # global row -> row of the local batch
        data = grain.DataLoader(
            data_source=examples.chains,
            sampler=EpochSampler(len(examples), config.seed, config.batch_size, self._rows, config.steps),
            operations=[_PaddedRows(examples.to_example, config.max_length, pad_id),
                        grain.transforms.Batch(len(self._local), drop_remainder=True)],
            shard_options=grain.sharding.ShardOptions(shard_index=process, shard_count=processes),
            worker_count=0)  # rendered in this process: the tokenizers stay where they were loaded
        self.iterator = iter(data)

    def __next__(self) -> list[jax.Array]:
        local = next(self.iterator)
        length = self._padded_length(local[2])
        local = [field[:, :length] for field in local]
        if self._sharding is None:
            return [jnp.asarray(field) for field in local]

        def shard(index, field):
            return local[field][[self._local[row] for row in range(*index[0].indices(self._shape[0]))]]

        shape = (self._shape[0], length)
        return [jax.make_array_from_callback(shape, self._sharding, functools.partial(shard, field=field))
                for field in range(3)]

    def _padded_length(self, valid: np.ndarray) -> int:
        """The length the JSONL path pads this batch to (`train.padded_length` of its longest row): a process sees
        only its rows, so with several the longest is agreed on first."""
        longest = int(valid.sum(axis=1).max())  # rows are right-padded
        if self._sharding is not None and jax.process_count() > 1:
            longest = int(np.max(multihost_utils.process_allgather(np.int32(longest))))
        return padded_length(longest, self._shape[1])

    def checkpoint_args(self, *, restore: bool) -> dict[str, Any]:
        """The orbax item that saves (or restores into) the iterator's position."""
        return {"data_loader": (grain.checkpoint.CheckpointRestore if restore
                                else grain.checkpoint.CheckpointSave)(self.iterator)}

    def check_position(self, step: int, checkpoint_dir: str) -> None:
        """Fails unless the restored position is at batch `step` (it is, unless the checkpoint was tampered with)."""
        # grain's state names the last sampler index this process read: (read - 1) * processes + process
        last = json.loads(self.iterator.get_state())["last_seen_indices"]["0"]
        read = (last - self._process) // len(self._rows) + 1
        if read != step * len(self._local):
            raise ValueError(f"{checkpoint_dir}: checkpoint at step {step} holds a data position of {read} examples "
                             f"read, not {step * len(self._local)}")
