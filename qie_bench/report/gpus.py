"""Known GPUs: the peak rates the physical floors (`floors.py`) divide by.

Every figure is the vendor's *dense* peak (no 2:4 sparsity) from the architecture whitepaper or
datasheet; matmul rates are with FP32 accumulation, which is what PyTorch's BF16/FP16 GEMMs use
(GeForce cards run FP16-accumulate GEMMs twice as fast, but PyTorch does not use them).
`pcie_gbps` is one direction of a x16 link (Gen4 ≈ 32 GB/s, Gen5 ≈ 64 GB/s), which is what
streaming offloaded weights to the GPU is limited by. `memory_bytes` is the total the driver
reports (approximately; a few hundred MiB of it go to the CUDA context).

`measured_bf16_tflops` is a matmul peak measured on that GPU where we have one (H100 SXM: 798
TFLOP/s, /work/shared/design/peers.md); floors computed with it are "attainable" floors, those
with the spec rate are hard floors that no correct measurement can beat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MiB = 2**20


@dataclass(frozen=True)
class Gpu:
    key: str  # short stable id, e.g. "h100-sxm"
    name: str  # how reports name it
    pattern: str  # regex (case-insensitive) matched against the NVML device name
    memory_bytes: int
    memory_tbps: float  # device memory bandwidth, TB/s (10^12 bytes/s)
    pcie_gbps: float  # host->device, one direction, GB/s (10^9 bytes/s)
    tf32_tflops: float  # dense tensor-core TF32 (the fastest an fp32 model could run)
    bf16_tflops: float  # dense tensor-core BF16/FP16, FP32 accumulate
    fp8_tflops: float | None  # None where the GPU has no FP8 tensor cores
    int8_tops: float | None
    consumer: bool = False
    measured_bf16_tflops: float | None = None
    source: str = ""

    def rate_tflops(self, compute: str) -> float:
        """Peak rate for a compute kind ('tf32', 'bf16', 'fp8', 'int8'); a kind the GPU lacks falls
        back to BF16 (the kernels would dequantize), an unknown kind to the fastest rate it has (so
        that the floor stays a lower bound)."""
        table = {"tf32": self.tf32_tflops, "bf16": self.bf16_tflops, "fp8": self.fp8_tflops, "int8": self.int8_tops}
        if compute not in table:
            return max(v for v in table.values() if v)
        return table[compute] or self.bf16_tflops

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30


GPUS: tuple[Gpu, ...] = (
    Gpu("h100-sxm", "H100 SXM 80GB", r"H100.*(SXM|HBM3)", 81559 * MiB, 3.35, 64.0, 494.7, 989.4, 1978.9, 1978.9,
        measured_bf16_tflops=798.0, source="NVIDIA H100 datasheet; 798 measured (peers.md)"),
    Gpu("h100-pcie", "H100 PCIe 80GB", r"H100.*PCIe", 81559 * MiB, 2.0, 64.0, 378.0, 756.0, 1513.0, 1513.0,
        source="NVIDIA H100 datasheet"),
    Gpu("h200", "H200 SXM 141GB", r"H200", 143771 * MiB, 4.8, 64.0, 494.7, 989.4, 1978.9, 1978.9,
        source="NVIDIA H200 datasheet"),
    Gpu("a100-80gb", "A100 80GB SXM", r"A100.*80", 81920 * MiB, 2.039, 32.0, 156.0, 312.0, None, 624.0,
        source="NVIDIA A100 datasheet"),
    Gpu("l40s", "L40S 48GB", r"L40S", 46068 * MiB, 0.864, 32.0, 183.0, 362.05, 733.0, 733.0,
        source="NVIDIA L40S datasheet"),
    Gpu("rtx-4090", "RTX 4090 24GB", r"RTX 4090", 24564 * MiB, 1.008, 32.0, 82.6, 165.2, 330.3, 660.6, consumer=True,
        source="NVIDIA Ada GPU architecture whitepaper"),
    Gpu("rtx-3090", "RTX 3090 24GB", r"RTX 3090", 24576 * MiB, 0.936, 32.0, 35.6, 71.0, None, 284.0, consumer=True,
        source="NVIDIA Ampere GA102 whitepaper"),
    Gpu("rtx-3070", "RTX 3070 8GB", r"RTX 3070(?! ?Ti)", 8192 * MiB, 0.448, 32.0, 20.3, 40.6, None, 162.6, consumer=True,
        source="NVIDIA Ampere GA102 whitepaper (GA104 column)"),
    Gpu("rtx-3060", "RTX 3060 12GB", r"RTX 3060(?! ?Ti)", 12288 * MiB, 0.360, 32.0, 12.8, 25.6, None, 102.4, consumer=True,
        source="GA106: 112 tensor cores at 1.78 GHz; ≈25 TFLOP/s BF16 (peers.md)"),
)


def gpu_by_key(key: str) -> Gpu:
    for g in GPUS:
        if g.key == key:
            return g
    raise KeyError(key)


def match_gpu(name: str | None) -> Gpu | None:
    """The table entry for an NVML device name or a hardware class ('gpu:NVIDIA H100 80GB HBM3'),
    or None (CPUs, unknown GPUs)."""
    if not name:
        return None
    text = name.split(":", 1)[1] if name.startswith(("gpu:", "cpu:")) else name
    if name.startswith("cpu:"):
        return None
    for g in GPUS:
        if re.search(g.pattern, text, re.IGNORECASE):
            return g
    return None
