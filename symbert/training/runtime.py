"""What a device's runtime adds to the tensors of a training step, beyond the tensors themselves.

The replay (:mod:`symbert.training.plan`, :mod:`symbert.training.driver`) asks a :class:`Runtime` two
things: how many bytes an allocation of a tensor really takes (:meth:`Runtime.padding`), and which
buffers of its own the runtime allocates at the first matmul of forward and of backward (:attr:`Runtime.workspaces`).
The backend policy chooses it: ``torch-cuda`` gets the CUDA runtime, every other policy none.

The CUDA runtime follows PyTorch's source (no GPU was at hand to measure it):

* ``c10/cuda/CUDACachingAllocator.cpp``: every allocation is rounded up to a multiple of 512 bytes
  (``round_size``), and ``max_memory_allocated`` counts the rounded size. A block found in the cache
  is not split when the remainder would be under 1 MiB, and is then handed out whole; that depends
  on what was freed before, and is not modelled.
* ``aten/src/ATen/cuda/CublasHandlePool.cpp``: each cuBLAS handle gets a workspace from the caching
  allocator when it first runs a matmul: 32 MiB on sm90 (H100, H200), ``:4096:2:16:8`` (8 MiB +
  128 KiB) elsewhere, or what ``CUBLAS_WORKSPACE_CONFIG`` says. The forward runs on the calling thread
  and backward on autograd's device thread, each with its own handle: two workspaces. The first
  cuBLASLt matmul (a linear layer with a bias, in forward) adds a 1 MiB cuBLASLt workspace.

* ``aten/src/ATen/native/cuda/Reduce.cuh``: a sum over many rows into few outputs (the gradient of a
  linear layer's bias) is split across thread blocks that meet in global memory: the kernel allocates a
  staging buffer and one semaphore per block column for the call (:func:`column_sum_scratch`).

Reserved memory (what the out-of-memory check compares against) is estimated by
:func:`reserved_estimate` from the allocations alive at once, grouped into the allocator's segments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import sympy

from symbert.gpus import GPU, gpu
from symbert.symbols import pad512

KIB, MIB = 2**10, 2**20
#: Allocations up to this size come from the small pool (``kSmallSize``), in 2 MiB segments (``kSmallBuffer``).
SMALL, SMALL_SEGMENT = MIB, 2 * MIB
#: Larger ones under 10 MiB (``kMinLargeAlloc``) take 20 MiB segments (``kLargeBuffer``); the rest are
#: rounded up to 2 MiB (``kRoundLarge``).
MIN_LARGE, LARGE_SEGMENT, ROUND_LARGE = 10 * MIB, 20 * MIB, 2 * MIB
#: PyTorch's default ``CUBLAS_WORKSPACE_CONFIG`` off sm90, and its sm90 default.
DEFAULT_CUBLAS_CONFIG = ":4096:2:16:8"
SM90_WORKSPACE = 32 * MIB
#: ``CUBLASLT_WORKSPACE_SIZE``'s default, 1024 KiB.
CUBLASLT_WORKSPACE = MIB
_CONFIG = re.compile(r"(?::\d{1,9}:\d{1,6})+")


def parse_workspace_config(text: str) -> int:
    """Bytes of one cuBLAS workspace for ``CUBLAS_WORKSPACE_CONFIG``: ``:SIZE:COUNT`` pairs, SIZE in KiB.

    Stricter than PyTorch, which warns and falls back to its default on a value it cannot read:
    anything but one or more ``:SIZE:COUNT`` pairs is a ValueError.
    """
    value = text.strip()
    if not _CONFIG.fullmatch(value):
        raise ValueError(f"cannot read CUBLAS_WORKSPACE_CONFIG {text!r} (expected :SIZE:COUNT pairs, e.g. :4096:8)")
    numbers = [int(n) for n in value.split(":")[1:]]
    return sum(size * KIB * count for size, count in zip(numbers[::2], numbers[1::2], strict=True))


@dataclass(frozen=True)
class Workspace:
    """A buffer the runtime allocates at the first matmul of ``phase`` (forward or backward) and keeps."""

    label: str
    phase: str
    nbytes: int | sympy.Symbol


@dataclass(frozen=True)
class Runtime:
    """A device runtime: the GPU (None: unnamed), allocation granularity and workspaces."""

    gpu: GPU | None
    workspace_config: str | None
    workspaces: tuple[Workspace, ...]

    def padding(self, nbytes: sympy.Expr) -> dict[sympy.Expr, sympy.Expr]:
        """The rounding of an allocation of ``nbytes``, as sparse terms (see :mod:`symbert.analysis.sizes`)."""
        pad = pad512(nbytes)
        return {} if pad == 0 else {pad: 1}

    @property
    def workspace_bytes(self) -> int:
        return sum(w.nbytes for w in self.workspaces)

    def opened(self) -> Runtime:
        """This runtime with its workspaces' bytes left open (:func:`workspace_symbol`): one replay under it
        serves every runtime whose workspaces differ from its in size alone, each at its
        :meth:`workspace_values`."""
        opened = tuple(replace(w, nbytes=workspace_symbol(i)) for i, w in enumerate(self.workspaces))
        return replace(self, workspaces=opened)

    def workspace_values(self) -> dict[sympy.Symbol, int]:
        """What the symbols of :meth:`opened` stand for on this runtime."""
        return {workspace_symbol(i): w.nbytes for i, w in enumerate(self.workspaces)}

    def describe(self) -> str:
        where = self.gpu.key if self.gpu else "unnamed CUDA GPU"
        cublas = self.workspaces[0].nbytes
        config = f" (CUBLAS_WORKSPACE_CONFIG={self.workspace_config})" if self.workspace_config else ""
        return (
            f"{where}: cuBLAS workspaces 2 × {_mib(cublas)}{config} + cuBLASLt {_mib(self.workspaces[1].nbytes)}, "
            "allocations rounded to 512 bytes"
        )


def workspace_symbol(i: int) -> sympy.Symbol:
    """The bytes of a runtime's ``i``-th workspace, left open (:meth:`Runtime.opened`)."""
    return sympy.Symbol(f"workspace_{i}", integer=True, positive=True)


def _mib(n: int) -> str:
    whole, rest = divmod(n, MIB)
    return f"({whole} MiB + {rest // KIB} KiB)" if rest else f"{whole} MiB"


@functools.lru_cache(maxsize=64)
def cuda_runtime(gpu_key: str | None = None, workspace_config: str | None = None) -> Runtime:
    """The CUDA runtime on GPU ``gpu_key`` (None: not sm90) with ``CUBLAS_WORKSPACE_CONFIG`` (None: unset)."""
    card = gpu(gpu_key) if gpu_key is not None else None
    if workspace_config is not None:
        cublas = parse_workspace_config(workspace_config)
    else:
        cublas = SM90_WORKSPACE if card is not None and card.sm90 else parse_workspace_config(DEFAULT_CUBLAS_CONFIG)
    workspaces = (
        Workspace("cuBLAS workspace (forward thread)", "forward", cublas),
        Workspace("cuBLASLt workspace", "forward", min(CUBLASLT_WORKSPACE, cublas)),
        Workspace("cuBLAS workspace (autograd's backward thread)", "backward", cublas),
    )
    return Runtime(card, workspace_config, workspaces)


#: Reduce.cuh's constants: threads per block (``mnt_wrapper``), a warp, the widest vector a thread loads for
#: several outputs (``get_output_vec_size``), the values per thread under which it splits no further, and the
#: bytes of the float32 accumulator and of a semaphore.
REDUCE_THREADS, WARP, REDUCE_VEC, MIN_VALUES, MAX_VALUES, ACC_BYTES, SEMAPHORE_BYTES = 512, 32, 4, 16, 256, 4, 4


def _last_pow2(n: int) -> int:
    return max(1, 1 << (n.bit_length() - 1))


def column_sum_scratch(rows: int, columns: int, card: GPU) -> tuple[int, int]:
    """The bytes of the staging buffer and of the semaphores that ATen's CUDA reduction allocates to sum a
    contiguous [rows, columns] tensor over its rows (0, 0: it needs none), on ``card``.

    ``setReduceConfig`` in ``Reduce.cuh``, for a reduction that is not along the fastest dimension: a block
    of ``block_width`` × ``block_height`` threads, each loading ``vec`` adjacent outputs; the rows are split
    across the block's warps when each thread would get enough of them, then across ``ctas`` blocks when
    there are still at least 256 rows per thread and few enough block columns to fill the card. Then the
    blocks meet in a float32 buffer of columns · ctas · block_width · vec values, with one int semaphore per
    block column. Rows · columns past 2³¹ (a kernel per 32-bit-indexable piece) are not modelled."""
    vec = REDUCE_VEC
    while columns % vec:
        vec //= 2
    threads = REDUCE_THREADS // vec
    dim0, dim1 = columns // vec, rows
    width0 = threads if dim0 >= threads else _last_pow2(dim0)
    height1 = threads if dim1 >= threads else _last_pow2(dim1)
    height = min(height1, threads // min(width0, WARP))
    width = min(width0, threads // height)
    if rows < min(height * MIN_VALUES, MAX_VALUES):
        return 0, 0  # each warp sums whole columns: no split across warps, nor across blocks
    per_thread = -(-rows // height)
    grid = -(-(columns // vec) // width)
    target = card.sms * (card.threads_per_sm // (width * height))
    if per_thread < MAX_VALUES or grid > target:
        return 0, 0
    ctas = max(min(-(-target // grid), -(-per_thread // MIN_VALUES)), -(-per_thread // MAX_VALUES))
    if ctas <= 1:
        return 0, 0
    return ACC_BYTES * columns * ctas * width * vec, SEMAPHORE_BYTES * grid


class ColumnSumScratch(sympy.Function):
    """:func:`column_sum_scratch`'s buffer (``part`` 0) or semaphores (1) as a formula in the rows, evaluated
    once they are a number: ``ColumnSumScratch(rows, columns, gpu key, part)``."""

    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, rows: sympy.Expr, columns: sympy.Expr, key: sympy.Symbol, part: sympy.Expr) -> sympy.Expr | None:
        if rows.is_Integer and columns.is_Integer:
            return sympy.Integer(column_sum_scratch(int(rows), int(columns), gpu(key.name))[int(part)])
        return None


def segment(nbytes: int) -> int:
    """The size of the segment (cudaMalloc) the caching allocator would create for an allocation."""
    if nbytes <= SMALL:
        return SMALL_SEGMENT
    if nbytes < MIN_LARGE:
        return LARGE_SEGMENT
    return -(-nbytes // ROUND_LARGE) * ROUND_LARGE


def reserved_estimate(alive: Iterable[int]) -> int:
    """Reserved bytes for allocations (already rounded to 512) alive at once: an estimate.

    Small ones (≤ 1 MiB) packed into 2 MiB segments, those under 10 MiB into 20 MiB segments, each
    larger one in its own segment rounded up to 2 MiB. The real allocator reuses and splits cached
    blocks, and keeps segments after their blocks are freed, so fragmentation can make it larger.
    """
    small = middle = large = 0
    for n in alive:
        if n <= SMALL:
            small += n
        elif n < MIN_LARGE:
            middle += n
        else:
            large += segment(n)
    return -(-small // SMALL_SEGMENT) * SMALL_SEGMENT + -(-middle // LARGE_SEGMENT) * LARGE_SEGMENT + large
