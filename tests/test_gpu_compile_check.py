"""The compile check for NVIDIA GPUs without a GPU: `<gpu>:<n>` is n devices of that GPU (descriptions written from
published figures), SmolLM2's prune stage compiles for one H100 with memory per device that grows with the
sequence and fits (and does not when the allocator's share is too small), and an unknown GPU is refused, naming the
known ones, before anything compiles. Compiling needs the CUDA plugin (the cuda12 extra); those tests skip without
it, the refusals and the descriptions' figures are checked everywhere."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ONE_DEVICE, ROOT

MODULE = "jaxprune.experiments.compile_check"
# Published figures, written out here rather than read from the table under test: the devices' names as XLA's
# descriptions give them, and the memory of the SXM parts in the data sheets' GB.
KINDS = {"a100": "NVIDIA A100-SXM4-80GB", "h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200 141GB HBM3e",
         "b200": "NVIDIA B200"}
MEMORY = {"a100": 80e9, "h100": 80e9, "h200": 141e9, "b200": 180e9}
# SmolLM2-135M-Instruct: 49152 x 576 embedding (tied), 30 layers of 9 query and 3 key-value heads of 64, MLP 1536.
SMOLLM2_PARAMETERS = 49152 * 576 + 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) + 576


def _has_cuda_plugin() -> bool:
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
    except ModuleNotFoundError:
        return False


needs_cuda = pytest.mark.skipif(not _has_cuda_plugin(), reason="compiling for GPUs needs the CUDA 12 plugin "
                                "(pip install -e '.[cuda12]')")


def compile_check(*args, env=None, timeout=900):
    result = subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=timeout, env={**ONE_DEVICE, **(env or {})})
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, lines


@needs_cuda
@pytest.mark.parametrize("gpu, count", [("a100", 8), ("h100", 8), ("h200", 1), ("b200", 8), ("h100", 3)])
def test_a_gpu_topology_is_n_devices_of_that_gpu(gpu, count):
    from jaxprune import compile_check

    devices = compile_check.topology_devices(f"{gpu}:{count}")
    assert len(devices) == len({d.id for d in devices}) == count
    assert {(d.platform, d.device_kind) for d in devices} == {("gpu", KINDS[gpu])}
    assert compile_check.hbm_per_device(devices) == MEMORY[gpu]
    assert compile_check.usable_fraction(devices) == 0.75  # JAX's allocator's default share of a GPU


@needs_cuda
def test_a_program_sharded_over_eight_h100s_holds_an_eighth_of_its_rows_per_device():
    """The devices are separate GPUs to the partitioner: rows split 8 ways cost an eighth per device."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxprune import compile_check

    mesh = Mesh(np.array(compile_check.topology_devices("h100:8")), ("data",))
    x = jax.ShapeDtypeStruct((1024, 2048), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("data")))
    w = jax.ShapeDtypeStruct((2048, 512), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    memory = jax.jit(lambda x, w: x @ w).lower(x, w).compile().memory_analysis()
    assert memory.argument_size_in_bytes == 1024 * 2048 * 4 // 8 + 2048 * 512 * 4
    assert memory.output_size_in_bytes == 1024 * 512 * 4 // 8


@needs_cuda
def test_the_smollm2_prune_stage_compiles_for_one_h100_fits_and_grows_with_the_sequence(tmp_path):
    flagfile = tmp_path / "prune.flags"
    flagfile.write_text("--dtype=float32\n")  # the packaged SmolLM2 (the CLI's default model)
    short, lines = compile_check("--stage=prune", f"--flags={flagfile}", "--topology=h100:1", "--reasoning_tokens=32")
    assert short.returncode == 0 and len(lines) == 1, short.stderr[-3000:]
    line = lines[0]
    assert line["devices"] == 1 and line["device_kind"] == KINDS["h100"] and line["hbm_bytes_per_device"] == 80e9
    assert line["fits"] and 0 < line["bytes_per_device"] <= 0.75 * 80e9
    base = line["programs"][0]
    assert base["program"].startswith("base pass (")
    slots = int(re.search(r"\((\d+) tokens\)", base["program"]).group(1))
    # Arguments: the float32 weights, the token row and its length; temporaries hold at least one vocabulary
    # chunk's float32 logits (4096 of them) at every position.
    assert base["argument_bytes"] == 4 * SMOLLM2_PARAMETERS + 4 * slots + 4
    assert base["temp_bytes"] >= 4 * 4096 * slots
    for program in line["programs"]:  # XLA:GPU counts no FLOPs: the cost model's stand in, and say so
        assert program["flops_source"] == "cost_model" and program["flops_per_device"] > 0
        assert program["flops_per_device"] == program["model_flops_per_device"]
    assert line["flops_source"] == "cost_model"

    # A longer chain: the base pass over it needs more memory; with the allocator given 1% of the GPU it does not fit.
    long, lines = compile_check("--stage=prune", f"--flags={flagfile}", "--topology=h100:1", "--reasoning_tokens=448",
                                env={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.01"})
    assert len(lines) == 1, long.stderr[-3000:]
    longer = lines[0]
    longer_base = longer["programs"][0]
    longer_slots = int(re.search(r"\((\d+) tokens\)", longer_base["program"]).group(1))
    assert longer_slots > slots
    assert longer_base["bytes_per_device"] - base["bytes_per_device"] >= 4 * 4096 * (longer_slots - slots)
    assert longer["bytes_per_device"] > 0.01 * 80e9
    assert longer["usable_fraction"] == 0.01 and not longer["fits"] and long.returncode == 1


@pytest.mark.parametrize("topology, message", [
    ("x100:8", "unknown GPU 'x100' (known GPUs: a100, b200, h100, h200"),
    ("h100", "a GPU topology is <gpu>:<GPUs on the host>, e.g. h100:8"),
    ("h100:0", "a GPU topology is <gpu>:<GPUs on the host>"),
    ("h100:2x4", "a GPU topology is <gpu>:<GPUs on the host>"),
])
def test_an_unknown_gpu_or_count_is_refused_with_the_known_ones_before_anything_compiles(tmp_path, topology,
                                                                                           message):
    flagfile = tmp_path / "prune.flags"
    flagfile.write_text("--dtype=float32\n")
    result, lines = compile_check("--stage=prune", f"--flags={flagfile}", f"--topology={topology}", timeout=300)
    assert result.returncode == 2 and lines == [], result.stderr[-3000:]
    assert f"compile_check: error: --topology={topology}: {message}" in result.stderr


def test_every_gpus_description_tells_xla_the_published_figures_of_its_chip():
    """Each GPU's GpuTargetConfig names the device, its compute capability and the memory and bandwidth its cost-model
    chip assumes (so "fits" and the compiled program agree); the cost model's H100 and H200 are the same chips. That
    XLA accepts each description is the compiling tests' part."""
    from jaxprune import compile_check, cost_model

    capability = {"a100": (8, 0), "h100": (9, 0), "h200": (9, 0), "b200": (10, 0)}  # NVIDIA's published
    assert sorted(compile_check.GPUS) == sorted(KINDS)
    for name, gpu in compile_check.GPUS.items():
        text = gpu.target_config()
        assert re.search(r'^device_description_str: "(.*)"$', text, re.M).group(1) == KINDS[name]
        assert gpu.chip.memory == MEMORY[name]
        assert int(re.search(r"device_memory_size: (\d+)", text).group(1)) == gpu.chip.memory
        assert int(re.search(r"memory_bandwidth: (\d+)", text).group(1)) == gpu.chip.bandwidth
        major, minor = (int(v) for v in re.search(r"major: (\d+)\s+minor: (\d+)", text).groups())
        assert (major, minor) == capability[name]
    assert compile_check.GPUS["h100"].chip is cost_model.CHIPS["h100"]
    assert compile_check.GPUS["h200"].chip is cost_model.CHIPS["h200"]
