"""Common GPUs: one entry each, with the memory symbert plans against and the compute capability.

``memory`` is the total ``nvidia-smi`` reports (``memory.total``, in MiB), as seen in public logs of
each card; PyTorch's ``torch.cuda.get_device_properties(0).total_memory`` is the same or a few
hundred MiB lower, depending on the driver, and the CUDA context takes a few hundred MiB more outside
the caching allocator. Give ``--gpu-memory`` for the exact figure of your machine. The compute
capability decides PyTorch's default cuBLAS workspace (32 MiB on sm90, else 8 MiB + 128 KiB). The number of
streaming multiprocessors (each card's datasheet) and the threads one can hold (the CUDA C++ Programming Guide's
table per compute capability: 2048 on 7.0, 8.0 and 9.0, 1024 on 7.5, 1536 on 8.6 and 8.9) decide how ATen's
reduction kernels split their work (:func:`symbert.training.runtime.column_sum_scratch`).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class GPU:
    """One card: its name on the command line, the name CUDA reports, memory in bytes, compute capability,
    streaming multiprocessors and the threads each can hold (``multiProcessorCount``,
    ``maxThreadsPerMultiProcessor``)."""

    key: str
    name: str
    memory: int
    capability: tuple[int, int]
    sms: int
    threads_per_sm: int

    @property
    def sm90(self) -> bool:
        return self.capability == (9, 0)


GPUS: dict[str, GPU] = {
    g.key: g
    for g in (
        GPU("h100", "NVIDIA H100 80GB HBM3", 81559 * MIB, (9, 0), 132, 2048),
        GPU("h200", "NVIDIA H200", 143771 * MIB, (9, 0), 132, 2048),
        GPU("a100-40gb", "NVIDIA A100-SXM4-40GB", 40960 * MIB, (8, 0), 108, 2048),
        GPU("a100-80gb", "NVIDIA A100-SXM4-80GB", 81920 * MIB, (8, 0), 108, 2048),
        GPU("v100-16gb", "Tesla V100-SXM2-16GB", 16160 * MIB, (7, 0), 80, 2048),
        GPU("v100-32gb", "Tesla V100-SXM2-32GB", 32510 * MIB, (7, 0), 80, 2048),
        GPU("t4", "Tesla T4", 15360 * MIB, (7, 5), 40, 1024),
        GPU("l4", "NVIDIA L4", 23034 * MIB, (8, 9), 58, 1536),
        GPU("a10g", "NVIDIA A10G", 23028 * MIB, (8, 6), 80, 1536),
        GPU("l40s", "NVIDIA L40S", 46068 * MIB, (8, 9), 142, 1536),
        GPU("rtx3090", "NVIDIA GeForce RTX 3090", 24576 * MIB, (8, 6), 82, 1536),
        GPU("rtx4090", "NVIDIA GeForce RTX 4090", 24564 * MIB, (8, 9), 128, 1536),
    )
}


#: The CUDA context: device memory a process holds outside PyTorch's caching allocator (the driver's context,
#: the loaded kernels, cuBLAS's and cuDNN's handles), which ``fit`` takes from a card's memory when no
#: ``--gpu-memory`` is given. No per-card measurement is recorded here; every card gets one published figure:
#: 781 MiB, what nvidia-smi showed for a process after ``import torch`` and its first CUDA call
#: (pytorch/pytorch#34323). It is an upper bound where CUDA's lazy module loading (CUDA 11.7 and later) loads
#: fewer kernels, so the cap it leaves errs on the safe side. ``--cuda-context`` gives your machine's figure.
CUDA_CONTEXT = 781 * MIB
CUDA_CONTEXT_SOURCE = "nvidia-smi after import torch and a first CUDA call, pytorch/pytorch#34323"


def gpu(key: str) -> GPU:
    """The GPU named ``key`` (case-insensitive); ValueError naming the known ones otherwise."""
    found = GPUS.get(key.strip().lower())
    if found is None:
        raise ValueError(f"unknown GPU {key!r} (known: {', '.join(GPUS)})")
    return found
