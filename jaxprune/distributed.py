"""Joining a multi-process run (`jax.distributed`) from command-line flags, for every experiment entry point.

Each process works on its own share of the data with its local devices and writes its own part file; process 0
merges them (`jaxprune.data.process_parts`). Start one process per host with the same `--coordinator_address` and
`--num_processes` and its own `--process_id`; on TPU pods and SLURM clusters `--coordinator_address=auto` lets JAX
find all three. On CPU the processes talk through gloo. Every CLI logs the topology it joined (`log_topology`).
"""

import socket

from absl import flags

_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 to run as one of several "
                                   "processes ('auto' on TPU pods and SLURM); unset: a single process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to --num_processes - 1.")


def initialize() -> None:
    """Joins the run the flags describe (before any other JAX work); does nothing for a single process."""
    if _COORDINATOR.value is None:
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if _COORDINATOR.value == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)


def process_id() -> int | None:
    """This process's index as the flags give it without starting JAX: 0 for a single process, None when JAX is
    to find it (`--coordinator_address=auto` without `--process_id`)."""
    if _COORDINATOR.value is None:
        return 0
    return _PROCESS_ID.value


def join_flags() -> list[str]:
    """This process's multi-process flags, to start a child process that joins the same kind of run."""
    return [f"--{flag.name}={flag.value}" for flag in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)
            if flag.value is not None]


def log_topology(mesh) -> None:
    """Logs where this process sits: processes, devices (local and global, with their kind) and the mesh."""
    import jax
    from absl import logging

    devices = jax.devices()
    logging.info("process %d of %d on %s; %d local of %d %s devices; mesh %s", jax.process_index(),
                 jax.process_count(), socket.gethostname(), jax.local_device_count(), len(devices),
                 devices[0].device_kind, dict(mesh.shape))
