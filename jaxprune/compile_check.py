"""Compiles each stage's real program for a TPU or NVIDIA GPU topology on a machine without either, and says whether
it fits.

`libtpu` compiles for a topology it is only told about (`jax.experimental.topologies`), so a configuration can be
checked before a pod is paid for (MaxText's `train_compile.py`). The CUDA plugin does the same for `<gpu>:<n>`, n GPUs
of one host (`h100:8`), from a description of the GPU (a GpuTargetConfig text proto written by
`jaxprune/gpu_targets.py` from published figures; `GPUS` is the table of them). Every program is the one the stage
runs, at real size: parameters are abstract (`jax.eval_shape`, nothing allocated) with the shardings our logical rules give them,
and each stage's worst case is compiled:

* teacher: prefilling `refill_rows` prompts into the decoding state, and the decode loop (one step per iteration)
  over `batch_size` rows with a KV cache of prompt + `max_new_tokens` slots;
* prune: the base pass over the longest chain, and for each chain length the suffix-kernel call whose packed rows
  copy the most prefix keys (the packer's own rows and widths at the first and at the last step);
* distill: one optimizer step at the flagfile's batch, length, remat, LoRA or full fine-tuning.

A program fits when arguments + temporaries + outputs (less what is aliased) stay within the share of the device's
memory a program may use: on a TPU its HBM less a little headroom the runtime keeps; on a GPU the share JAX's
allocator takes (`XLA_PYTHON_CLIENT_MEM_FRACTION`, 0.75 unless set, read here as the run would read it). FLOPs are
XLA's, per device (the vocabulary loop is unrolled so that all its chunks are counted, in memory too, a slight
overestimate; the decode loop's body, one step, is counted once), next to this package's cost model. XLA:GPU counts
none; there the cost model's figure stands in, marked `"flops_source": "cost_model"`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune import cost_model, sharding
from jaxprune.gpu_targets import GPUS, Gpu
from jaxprune.models.config import ModelConfig
from jaxprune.models import llama
from jaxprune.models.layers import LayerCache
from jaxprune.models.llama import abstract_model

HEADROOM = 0.95  # share of HBM a program may use: the runtime keeps some for itself
GPU_MEMORY_FRACTION = 0.75  # JAX's allocator takes this share of a GPU's memory unless XLA_PYTHON_CLIENT_MEM_FRACTION
_CHIP_BY_KIND = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5": "v5p", "TPU v6 lite": "v6e"}


class TopologyError(ValueError):
    """A --topology the check cannot compile for (refused before anything is compiled)."""


def gpu_topology(name: str) -> tuple[Gpu, int] | None:
    """`h100:8` as (the GPU, 8); None for a TPU name (`v5e:2x4`: a `v` and a digit); an unknown GPU, or a count that
    is not a positive whole number, is refused with what is known."""
    model, _, count = name.partition(":")
    if re.fullmatch(r"v\d.*", model):
        return None
    if model.lower() not in GPUS:
        raise TopologyError(f"--topology={name}: unknown GPU {model!r} (known GPUs: {', '.join(sorted(GPUS))}, as "
                            f"<gpu>:<GPUs on the host>, e.g. h100:8; TPU topologies look like v5e:2x4)")
    if not count.isdigit() or int(count) < 1:
        raise TopologyError(f"--topology={name}: a GPU topology is <gpu>:<GPUs on the host>, e.g. {model.lower()}:8")
    return GPUS[model.lower()], int(count)


def _gpu_devices(name: str, gpu: Gpu, count: int) -> list:
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(platform="cuda", target_config=gpu.target_config(),
                                                topology=f"1x1x{count}")  # one slice, one host, `count` GPUs
    except Exception as error:
        raise TopologyError(f"--topology={name}: the CUDA plugin could not describe it ({error}); GPU topologies need "
                            "the cuda12 extra: pip install -e '.[cuda12]'") from None
    return list(topology.devices)


def topology_devices(name: str) -> list:
    """The devices of a TPU topology such as `v5e:2x4` (any name libtpu accepts) or of n GPUs of one host such as
    `h100:8`, without the hardware."""
    from jax.experimental import topologies

    gpu = gpu_topology(name)
    if gpu is not None:
        return _gpu_devices(name, *gpu)
    generation, _, shape = name.partition(":")
    chips = int(np.prod([int(size) for size in shape.split("x")])) if shape.replace("x", "").isdigit() else 0
    kind, cores = {"v5e": ("v5litepod", 1), "v6e": ("v6e", 1), "v5p": ("v5p", 2), "v4": ("v4", 2)}.get(
        generation, (generation, 1))
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{kind}-{chips * cores}")  # else libtpu warns it cannot tell
    try:
        return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
    except Exception as error:  # libtpu's own message says what it expected
        raise ValueError(f"--topology={name}: {error}") from None


def chip_of(devices) -> cost_model.Chip:
    kind = devices[0].device_kind
    gpus = {gpu.device_kind: gpu.chip for gpu in GPUS.values()}
    if kind in gpus:
        return gpus[kind]
    if kind not in _CHIP_BY_KIND:
        raise ValueError(f"no HBM figure for device kind {kind!r} (known: {', '.join([*_CHIP_BY_KIND, *gpus])})")
    return cost_model.CHIPS[_CHIP_BY_KIND[kind]]


def usable_fraction(devices) -> float:
    """The share of a device's memory a program may use: a TPU's HBM less the runtime's headroom; on a GPU, what
    JAX's allocator takes (its own default unless XLA_PYTHON_CLIENT_MEM_FRACTION is set)."""
    if devices[0].platform != "gpu":
        return HEADROOM
    return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION") or GPU_MEMORY_FRACTION)


def hbm_per_device(devices) -> int:
    """A chip's HBM split over the devices it shows as (TPU v4 without megacore: one per TensorCore)."""
    chips = len({tuple(d.coords) for d in devices})
    return int(chip_of(devices).memory * chips // len(devices))


@dataclasses.dataclass
class Program:
    """One jitted function, the abstract arguments it is compiled for, and the cost model's FLOPs per device."""

    name: str
    function: Callable
    args: tuple
    kwargs: dict
    model_flops_per_device: float


def per_device(mesh: Mesh, rows: int, matmuls: float, attention: float) -> float:
    """How the partitioner divides a program's work: rows over the batch axes (when they divide), weights over
    fsdp and tensor. Matmuls are split over every device when the rows split, else over the weight shards
    (partial sums; data replicas repeat them); attention, which has no weights, over row and head shards only."""
    batch = sharding.batch_shards(mesh)
    tensor = mesh.shape.get("tensor", 1)
    if rows % batch == 0:
        return matmuls / mesh.size + attention / (batch * tensor)
    return matmuls / (mesh.shape.get("fsdp", 1) * tensor) + attention / tensor


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _replicated(mesh: Mesh, shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, PartitionSpec()))


def _rows(mesh: Mesh, shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape)))


def abstract_params(config: ModelConfig, dtype, mesh: Mesh):
    """The model's graph and its parameters as sharded abstract arrays, as `load_model(..., mesh=mesh)` lays them."""
    graphdef, state = nnx.split(abstract_model(config, dtype))
    shardings = sharding.state_shardings(state, mesh)
    state = jax.tree.map(lambda variable, s: variable.replace(jax.ShapeDtypeStruct(variable.shape, variable.dtype,
                                                                                   sharding=s)),
                         state, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return graphdef, state


def teacher_programs(config: ModelConfig, mesh: Mesh, *, dtype, batch_size: int, prompt_tokens: int,
                     max_new_tokens: int) -> list[Program]:
    from jaxprune.generation import PROMPT_BUCKET, SamplingConfig, _decode, _prefill_rows, empty_rows, row_shardings

    graphdef, params = abstract_params(config, dtype, mesh)
    shards = sharding.batch_shards(mesh)
    batch = -(-batch_size // shards) * shards  # as the Decoder rounds it
    refill = max(1, batch // 8)
    prompt = -(-prompt_tokens // PROMPT_BUCKET) * PROMPT_BUCKET
    slots = prompt + max_new_tokens
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    state = jax.eval_shape(lambda k: empty_rows(config, batch, prompt, max_new_tokens, dtype, k), keys)
    state = _abstract(state, row_shardings(state, mesh))
    refill_keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), refill))
    prefill = Program("prefill", _prefill_rows, (graphdef, params, state, _replicated(mesh, (refill,), jnp.int32),
                                                 _replicated(mesh, (refill, prompt), jnp.int32),
                                                 _replicated(mesh, (refill, prompt), jnp.bool_),
                                                 _replicated(mesh, refill_keys.shape, refill_keys.dtype)),
                      {"sampling": sampling},
                      per_device(mesh, refill,
                                 cost_model.matmul_flops(config, tokens=refill * prompt, head_tokens=refill),
                                 cost_model.attention_flops(config, tokens=refill * prompt, keys=slots)))
    scalar = _replicated(mesh, (), jnp.int32)
    # The whole ring, and the widest window of it a call gathers (`generation.decode_window`: its copy is the most
    # memory decoding takes).
    decodes = [Program(f"decode step{name}", _decode, (graphdef, params, state, scalar, scalar),
                       {"sampling": sampling, "window": window},
                       per_device(mesh, batch, cost_model.matmul_flops(config, tokens=batch, head_tokens=batch),
                                  cost_model.attention_flops(config, tokens=batch, keys=prompt + window)))
               for name, window in (("", max_new_tokens), (" (half-ring window)", -(-max_new_tokens // 2)))]
    return [prefill, *decodes]


def _suffix_call_shape(prompt: int, reasoning_left: int, answer: int, token_budget: int, row_multiple: int):
    """Rows and width of the scoring kernel's largest call at a step, from the kernel's own packer."""
    from jaxprune.pruning.packing import ChainSuffixes, call_rows, pack_suffixes, round_up
    from jaxprune.pruning.scoring import LENGTH_BUCKET

    length = prompt + reasoning_left + answer
    chain = ChainSuffixes(np.zeros(length, np.int32), np.arange(prompt, prompt + reasoning_left))
    rows, width = pack_suffixes([chain], token_budget, row_multiple).tokens.shape
    return max(call_rows(rows, width, token_budget, row_multiple)), width, round_up(length, LENGTH_BUCKET)


def prune_programs(config: ModelConfig, mesh: Mesh, *, dtype, token_budget: int, prompt: int,
                   reasoning: list[int], answer: int, keep_ratio: float) -> list[Program]:
    from jaxprune.pruning.greedy import deletions_for
    from jaxprune.pruning.packing import round_up
    from jaxprune.pruning.scoring import LENGTH_BUCKET, _base_pass, _suffix_pass

    graphdef, params = abstract_params(config, dtype, mesh)
    multiple = sharding.batch_shards(mesh)
    vocab_chunk = 4096  # the Scorer's default
    slots = round_up(prompt + max(reasoning) + answer, LENGTH_BUCKET)
    programs = [Program(f"base pass ({slots} tokens)", _base_pass,
                        (graphdef, params, _replicated(mesh, (1, slots), jnp.int32), _replicated(mesh, (), jnp.int32)),
                        {"vocab_chunk": vocab_chunk, "with_attention": False},
                        per_device(mesh, 1, cost_model.matmul_flops(config, tokens=slots, head_tokens=slots),
                                   cost_model.attention_flops(config, tokens=slots, keys=slots)))]
    for n in reasoning:
        steps = (n, n - deletions_for(n, keep_ratio) + 1)  # the first step, and the last (narrowest rows)
        shapes = [_suffix_call_shape(prompt, left, answer, token_budget, multiple) for left in steps]
        rows, width, prefix = max(shapes, key=lambda s: s[0] * (s[2] + s[1]))  # prefix keys copied into rows
        cache_shape = (1, config.num_kv_heads, prefix, config.head_dim)
        cache_sharding = sharding.logical_sharding(mesh, (None, "activation_kv_heads", None, None), cache_shape)
        cache = tuple(LayerCache(*(jax.ShapeDtypeStruct(cache_shape, dtype, sharding=cache_sharding),) * 2)
                      for _ in range(config.num_layers))
        row_args = [_rows(mesh, (rows, width), jnp.int32) for _ in range(5)]
        programs.append(Program(f"suffix call (reasoning {n}: {rows} rows x {width}, prefix {prefix})", _suffix_pass,
                                (graphdef, params, cache, _rows(mesh, (rows,), jnp.int32), *row_args),
                                {"vocab_chunk": vocab_chunk},
                                per_device(mesh, rows, cost_model.matmul_flops(config, tokens=rows * width,
                                                                               head_tokens=rows * width),
                                           cost_model.attention_flops(config, tokens=rows * width,
                                                                      keys=prefix + width))))
    return programs


def distill_programs(config: ModelConfig, mesh: Mesh, train_config, *, dtype) -> list[Program]:
    from jaxprune.distill.train import init_train_state, make_optimizer, train_state_shardings, train_step

    graphdef, params = abstract_params(config, dtype, mesh)
    optimizer = make_optimizer(train_config)
    state = jax.eval_shape(lambda p: init_train_state(p, train_config)[0], params)
    state = _abstract(state, train_state_shardings(state, mesh))
    shape = (train_config.batch_size, train_config.max_length)
    batch = (_rows(mesh, shape, jnp.int32), _rows(mesh, shape, jnp.bool_), _rows(mesh, shape, jnp.bool_))
    flops = cost_model.train_step_flops(config, batch=shape[0], length=shape[1], remat=train_config.remat)
    flops = per_device(mesh, shape[0], flops, 0.0)  # attention is a few % of a 2k-token step: split with the rest
    return [Program("train step", train_step, (graphdef, state.frozen, state.trainable, state.opt_state, *batch),
                    {"optimizer": optimizer, "lora_scale": train_config.lora_scale,
                     "compute_dtype": train_config.compute_dtype, "remat": train_config.remat}, flops)]


def compile_program(program: Program, mesh: Mesh) -> dict[str, Any]:
    """Compiles one program; its bytes and FLOPs per device."""
    started = time.perf_counter()
    llama.UNROLL_VOCAB_LOOP = True  # traced with every vocabulary chunk in sight of XLA's count
    try:
        with jax.set_mesh(mesh):
            compiled = program.function.lower(*program.args, **program.kwargs).compile()
    except jax.errors.JaxRuntimeError as error:  # XLA:TPU refuses a program that cannot fit its HBM
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        return {"program": program.name, "bytes_per_device": _bytes_required(str(error)),
                "error": str(error).splitlines()[0], "flops_per_device": 0.0, "flops_source": "none",
                "model_flops_per_device": program.model_flops_per_device,
                "seconds_to_compile": round(time.perf_counter() - started, 1)}
    finally:
        llama.UNROLL_VOCAB_LOOP = False
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")  # XLA:GPU has no cost analysis: the cost model's count stands in
    used = (memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
            - memory.alias_size_in_bytes)
    return {"program": program.name, "bytes_per_device": int(used),
            "argument_bytes": int(memory.argument_size_in_bytes), "temp_bytes": int(memory.temp_size_in_bytes),
            "flops_per_device": program.model_flops_per_device if flops is None else float(flops),
            "flops_source": "cost_model" if flops is None else "xla",
            "model_flops_per_device": program.model_flops_per_device,
            "seconds_to_compile": round(time.perf_counter() - started, 1)}


def _bytes_required(message: str) -> int:
    """What an out-of-memory compile error says the program needs ("... required for HLO temporaries (16.95G)
    exceeds available HBM (15.75G)"): its first size, a lower bound on the whole program."""
    match = re.search(r"(\d+(?:\.\d+)?)([KMGT])\b", message.split("exceeds")[0])
    if match is None:
        return 0
    return int(float(match.group(1)) * 1024 ** ("KMGT".index(match.group(2)) + 1))


def stage_report(stage: str, programs: list[Program], mesh: Mesh, topology: str) -> dict[str, Any]:
    """The stage's line: its largest program's bytes against the memory of one device, the FLOPs of all its programs
    (`flops_source`: XLA's count, the cost model's where XLA gives none, or `mixed`)."""
    devices = list(mesh.devices.flat)
    results = [compile_program(program, mesh) for program in programs]
    hbm = hbm_per_device(devices)
    fraction = usable_fraction(devices)
    used = max(r["bytes_per_device"] for r in results)
    sources = {r["flops_source"] for r in results} - {"none"}
    return {"stage": stage, "topology": topology, "devices": len(devices), "device_kind": devices[0].device_kind,
            "mesh": dict(mesh.shape), "bytes_per_device": used, "hbm_bytes_per_device": hbm,
            "usable_fraction": fraction, "fits": used <= fraction * hbm and not any("error" in r for r in results),
            "flops_source": sources.pop() if len(sources) == 1 else "mixed" if sources else "none",
            "flops_per_device": sum(r["flops_per_device"] for r in results),
            "model_flops_per_device": sum(r["model_flops_per_device"] for r in results),
            "seconds_to_compile": round(sum(r["seconds_to_compile"] for r in results), 1), "programs": results}
