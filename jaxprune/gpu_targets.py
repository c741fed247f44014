"""The NVIDIA GPUs the compile check compiles for without one, each in one table row.

XLA compiles for a GPU it is only told about: a `GpuTargetConfig` text proto describing the device (its multiprocessors,
memory, bandwidth, caches, compute capability, cuDNN version). The description is written here from the vendors'
published figures (data sheets, the CUDA programming guide's compute-capability limits), beside the cost model's
`Chip` of the same GPU (peak dense bfloat16 FLOP/s, bandwidth, memory in the data sheet's GB), so that what XLA
compiles for and what "fits" and throughput are judged against cannot drift apart.
"""

from __future__ import annotations

import dataclasses

from jaxprune import cost_model

# Limits every GPU here shares (CUDA compute capability 8.0 and later).
_COMMON_LIMITS = {"threads_per_block_limit": 1024, "threads_per_warp": 32, "shared_memory_per_block": 48 * 1024,
                  "threads_per_core_limit": 2048, "block_dim_limit_x": 2**31 - 1, "block_dim_limit_y": 65535,
                  "block_dim_limit_z": 65535, "registers_per_core_limit": 65536, "registers_per_block_limit": 65536}
_THREAD_DIM_LIMITS = {"thread_dim_limit_x": 1024, "thread_dim_limit_y": 1024, "thread_dim_limit_z": 64}
CUDNN = (9, 10, 0)  # the cuDNN generation the CUDA 12 wheels of jax 0.10 ship with


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU: the name its compiled-for devices carry, its cost-model chip, and its description's figures."""

    device_kind: str
    chip: cost_model.Chip
    compute_capability: tuple[int, int]
    arch_specific: bool           # sm_90a / sm_100a instructions (wgmma, TMA): Hopper and Blackwell
    multiprocessors: int
    fp32_units_per_multiprocessor: int
    clock_ghz: float              # boost clock
    l2_cache_bytes: int
    shared_memory_per_multiprocessor: int
    shared_memory_per_block_optin: int

    def target_config(self) -> str:
        """The `GpuTargetConfig` text proto XLA's CUDA compiler reads (`topologies.get_topology_desc`)."""
        info = {**_COMMON_LIMITS,
                "shared_memory_per_core": self.shared_memory_per_multiprocessor,
                "core_count": self.multiprocessors, "fpus_per_core": self.fp32_units_per_multiprocessor,
                "memory_bandwidth": int(self.chip.bandwidth), "l2_cache_size": self.l2_cache_bytes,
                "clock_rate_ghz": self.clock_ghz, "device_memory_size": int(self.chip.memory),
                "shared_memory_per_block_optin": self.shared_memory_per_block_optin}
        major, minor = self.compute_capability
        lines = ["gpu_device_info {", *(f"  {key}: {value}" for key, value in info.items()),
                 "  cuda_compute_capability {", f"    major: {major}", f"    minor: {minor}",
                 f"    feature_extension: {'ACCELERATED_FEATURES' if self.arch_specific else 'NONE'}", "  }",
                 f'  dnn_version: "{".".join(map(str, CUDNN))}"',
                 *(f"  {key}: {value}" for key, value in _THREAD_DIM_LIMITS.items()), "}",
                 'platform_name: "CUDA"',
                 "dnn_version_info {", *(f"  {part}: {value}" for part, value in zip(("major", "minor", "patch"),
                                                                                      CUDNN)), "}",
                 f'device_description_str: "{self.device_kind}"']
        return "\n".join(lines) + "\n"


# SXM parts. Peak dense (no sparsity) bfloat16 FLOP/s and HBM bandwidth from NVIDIA's data sheets; A100 and B200 are
# here, H100 and H200 are the cost model's own chips.
GPUS = {
    "a100": Gpu("NVIDIA A100-SXM4-80GB", cost_model.Chip("NVIDIA A100 SXM 80GB", 312e12, 2.039e12, 80e9),
                (8, 0), False, 108, 64, 1.41, 40 * 2**20, 164 * 1024, 163 * 1024),
    "h100": Gpu("NVIDIA H100 80GB HBM3", cost_model.CHIPS["h100"], (9, 0), True, 132, 128, 1.98, 50 * 2**20,
                228 * 1024, 227 * 1024),
    "h200": Gpu("NVIDIA H200 141GB HBM3e", cost_model.CHIPS["h200"], (9, 0), True, 132, 128, 1.98, 50 * 2**20,
                228 * 1024, 227 * 1024),
    "b200": Gpu("NVIDIA B200", cost_model.Chip("NVIDIA B200", 2.25e15, 8e12, 180e9), (10, 0), True, 148, 128, 1.965,
                126 * 2**20, 228 * 1024, 227 * 1024),
}
