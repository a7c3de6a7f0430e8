"""PyTorch's CUDA caching allocator (``c10/cuda/CUDACachingAllocator.cpp``), simulated on an ordered stream of events.

The rules, as the C++ source states them:

* every request is rounded up to a multiple of 512 bytes, or with ``roundup_power2_divisions`` to the next of
  that many divisions of its power-of-two interval (:func:`round_size`);
* a rounded size of at most 1 MiB comes from the small pool, a larger one from the large pool. A new segment
  (``cudaMalloc``) is 2 MiB for the small pool; for the large pool it is the large segment size (20 MiB) under
  10 MiB, else the size rounded up to 2 MiB (:func:`segment_size`);
* a request takes the smallest cached free block of its pool and stream that fits, the lowest address among equals;
  ``max_split_size_mb`` keeps blocks at least that large for requests at least that large, and those only within
  ``max_non_split_rounding_mb`` of the request;
* the block is split when the remainder is at least 512 bytes (small pool, and every block under
  ``expandable_segments``) or more than 1 MiB (large pool, for a request under ``max_split_size_mb``); otherwise the
  request holds the whole block, and ``max_memory_allocated`` counts it whole;
* a freed block merges with its free neighbours in the same segment;
* when no cached block fits, a new segment is made. Under a cap (``set_per_process_memory_fraction``) one that would
  take the reserved bytes past the cap fails; the allocator then releases cached oversize blocks (with
  ``max_split_size_mb``), else every cached segment that is not split (``release_cached_blocks``), and tries
  once more, and only then runs out of memory. With ``garbage_collection_threshold`` and a cap, it first
  releases the unsplit cached segments older than the average, until reserved memory is back under the threshold;
* with ``expandable_segments`` a pool keeps one segment per stream, as large as the card, and maps pages into it
  (2 MiB for the small pool, the large segment size for the large pool) as requests need them.

Addresses decide ties between free blocks of equal size. The simulation gives each new segment the highest free
range of a virtual address space (:class:`AddressSpace`); how the CUDA driver really places segments is not
modelled, so where a recorded trace shows the address a segment got, the caller passes it (``at=``). Workspaces
(cuBLAS, cuBLASLt) are ordinary requests in the stream, tagged ``workspace``; their sizes per torch release and
architecture are in :data:`RELEASES`.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The constants of ``c10/core/AllocatorConfig.h`` that no release has changed.
MIN_BLOCK = 512
SMALL_SIZE = 1 * MiB
SMALL_BUFFER = 2 * MiB
MIN_LARGE_ALLOC = 10 * MiB
ROUND_LARGE = 2 * MiB


class AllocatorError(ValueError):
    """A bad allocator setting or event; its message is one line."""


class OutOfMemory(RuntimeError):
    """An allocation failed under the cap, after the allocator released what it could."""


@dataclass(frozen=True)
class Release:
    """What differs between torch releases: the large segment size and the BLAS workspaces."""

    name: str
    large_segment_size: int
    #: cuBLAS workspace per (handle, stream), by CUDA architecture; "default" for the rest.
    cublas_workspace: dict[str, int]
    #: cuBLASLt workspace per (handle, stream), when it is not the cuBLAS one.
    cublaslt_workspace: int
    #: Whether cuBLASLt uses the cuBLAS workspace (TORCH_CUBLASLT_UNIFIED_WORKSPACE) instead of its own.
    cublaslt_shares_cublas_workspace: bool

    def workspaces(self, arch: str) -> tuple[int, int]:
        """The bytes a (handle, stream) allocates for cuBLAS and for cuBLASLt (0: it shares cuBLAS's)."""
        cublas = self.cublas_workspace.get(arch, self.cublas_workspace["default"])
        return cublas, 0 if self.cublaslt_shares_cublas_workspace else self.cublaslt_workspace


#: aten/src/ATen/cuda/CublasHandlePool.cpp: a workspace per (thread, stream), ":4096:8" (32 MiB) on Hopper and,
#: in the 2.13-era source, Blackwell (compute capability 9, 10 and 12), else ":4096:2:16:8" (8 MiB + 128 KiB);
#: CUBLASLT_WORKSPACE_SIZE defaults to 1 MiB. The real H100 trace of torch 2.11 shows 32 MiB per thread and a
#: separate 1 MiB cuBLASLt workspace; torch 2.13's open-source CUDA build unifies the cuBLASLt workspace with the
#: cuBLAS one unless TORCH_CUBLASLT_UNIFIED_WORKSPACE=0. 2.11 lists only what the trace shows for sm90.
_PRE_HOPPER = 8 * MiB + 128 * KiB
RELEASES: dict[str, Release] = {
    "2.11": Release("2.11", 20 * MiB, {"sm90": 32 * MiB, "default": _PRE_HOPPER}, 1 * MiB, False),
    "2.13": Release("2.13", 20 * MiB, {**dict.fromkeys(("sm90", "sm100", "sm120"), 32 * MiB), "default": _PRE_HOPPER},
                    1 * MiB, True),
}

UNLIMITED = 1 << 64
#: roundup_power2_divisions applies per power-of-two interval from 1 MiB to 64 GiB (the last one: all above).
_INTERVALS = 16


@dataclass(frozen=True)
class Config:
    """The settings of ``PYTORCH_ALLOC_CONF`` (or ``PYTORCH_CUDA_ALLOC_CONF``) that the simulation follows."""

    max_split_size: int = UNLIMITED
    max_non_split_rounding: int = 20 * MiB
    roundup_power2_divisions: tuple[int, ...] = (0,) * _INTERVALS
    garbage_collection_threshold: float = 0.0
    expandable_segments: bool = False
    large_segment_size: int = 20 * MiB

    def divisions(self, size: int) -> int:
        """The divisions that apply to a request of ``size`` bytes (its interval; 1 MiB and under: the first)."""
        index = max(size.bit_length() - 1 - 20, 0)
        return self.roundup_power2_divisions[min(index, _INTERVALS - 1)]


def _number(key: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise AllocatorError(f"allocator setting {key}: expected a whole number, got {text!r}")
    return int(text)


def _power_of_two(key: str, text: str) -> int:
    value = _number(key, text)
    if value and value & (value - 1):
        raise AllocatorError(f"allocator setting {key}: {value} is not a power of two")
    return value


def _divisions(text: str) -> tuple[int, ...]:
    """``4`` (every interval) or ``[256:1,512:2,>:8]``, read as ``parseRoundUpPower2Divisions`` reads it: the first
    entry also covers every interval below its own, an entry of N MB sets interval log2(N) (requests from N MiB up
    to 2N), and ``>`` sets every interval after the last one named. Intervals left out do not round up (0)."""
    key = "roundup_power2_divisions"
    if not text.startswith("["):
        if _power_of_two(key, text) == 0:
            raise AllocatorError(f"allocator setting {key}: 0 is not a power of two")
        return (int(text),) * _INTERVALS
    if not text.endswith("]"):
        raise AllocatorError(f"allocator setting {key}: unclosed list {text!r}")
    values = [0] * _INTERVALS
    last: int | None = None
    for item in filter(None, text[1:-1].split(",")):
        start, sep, value = item.partition(":")
        if not sep:
            raise AllocatorError(f"allocator setting {key}: expected size:divisions, got {item!r}")
        divisions = _power_of_two(key, value)
        if start == ">":
            first = 0 if last is None else last + 1
            values[first:] = [divisions] * (_INTERVALS - first)
            continue
        mb = _number(key, start)
        if mb == 0 or mb & (mb - 1):
            raise AllocatorError(f"allocator setting {key}: the interval {start} is not a power of two")
        index = min(mb.bit_length() - 1, _INTERVALS - 1)
        if last is None:
            values[:index] = [divisions] * index
        values[index] = divisions
        last = index
    return tuple(values)


#: Settings that do not change device memory (the pinned host allocator's, cudaMalloc's locking).
NO_EFFECT = frozenset({
    "pinned_use_background_threads", "pinned_use_cuda_host_register", "pinned_num_register_threads",
    "pinned_max_round_threshold", "pinned_max_cached_size", "pinned_reserve_segment_size_mb",
    "release_lock_on_cudamalloc", "graph_capture_record_stream_reuse",
})
#: max_split_size_mb and max_non_split_rounding_mb: at least 20 (``kLargeBuffer`` in MB).
MIN_SPLIT_MB = 20


def _items(text: str) -> list[str]:
    """``key:value`` items, split at the commas outside brackets."""
    items: list[str] = []
    depth = 0
    for part in text.replace(" ", "").split(","):
        if depth:
            items[-1] += "," + part
        elif part:
            items.append(part)
        depth = items[-1].count("[") - items[-1].count("]") if items else 0
    return items


def _at_least_20(key: str, value: str) -> int:
    mb = _number(key, value)
    if mb < MIN_SPLIT_MB:
        raise AllocatorError(f"allocator setting {key}: {mb} is too small, must be >= {MIN_SPLIT_MB}")
    return mb * MiB


def _threshold(key: str, value: str) -> float:
    try:
        threshold = float(value)
    except ValueError:
        raise AllocatorError(f"allocator setting {key}: expected a number, got {value!r}") from None
    if not 0.0 < threshold < 1.0:
        raise AllocatorError(f"allocator setting {key}: {value} is not between 0 and 1 (exclusive)")
    return threshold


def _flag(key: str, value: str) -> bool:
    if value not in ("True", "False", "true", "false"):
        raise AllocatorError(f"allocator setting {key}: expected True or False, got {value!r}")
    return value.lower() == "true"


def _backend(key: str, value: str) -> None:
    if value != "native":
        raise AllocatorError(f"allocator setting {key}:{value}: the simulation follows the native caching allocator")


def _segment(key: str, value: str) -> int:
    mb = _number(key, value)
    if mb < 1:
        raise AllocatorError(f"allocator setting {key}: must be at least 1")
    return mb * MiB


#: Each setting: the Config field it sets (None: none) and how its value is read.
SETTINGS = {
    "max_split_size_mb": ("max_split_size", _at_least_20),
    "max_non_split_rounding_mb": ("max_non_split_rounding", _at_least_20),
    "roundup_power2_divisions": ("roundup_power2_divisions", lambda key, value: _divisions(value)),
    "garbage_collection_threshold": ("garbage_collection_threshold", _threshold),
    "expandable_segments": ("expandable_segments", _flag),
    "large_segment_size_mb": ("large_segment_size", _segment),
    "backend": (None, _backend),
}


def parse_config(text: str, release: Release = RELEASES["2.13"]) -> Config:
    """A ``PYTORCH_ALLOC_CONF`` string, ``key:value`` pairs separated by commas; a bad one raises AllocatorError."""
    settings: dict = {"large_segment_size": release.large_segment_size}
    for item in _items(text):
        key, sep, value = item.partition(":")
        if not sep or not value:
            raise AllocatorError(f"allocator setting {item!r}: expected key:value")
        if key in NO_EFFECT:
            continue
        if key not in SETTINGS:
            raise AllocatorError(f"allocator setting {key!r} is not one the simulation knows")
        name, read = SETTINGS[key]
        value = read(key, value)
        if name is not None:
            settings[name] = value
    return Config(**settings)


def from_environment(environ: Mapping[str, str], release: Release = RELEASES["2.13"]) -> Config:
    """The settings PyTorch reads: ``PYTORCH_ALLOC_CONF``, else ``PYTORCH_CUDA_ALLOC_CONF`` (the older name)."""
    text = environ.get("PYTORCH_ALLOC_CONF", environ.get("PYTORCH_CUDA_ALLOC_CONF", ""))
    return parse_config(text, release)


def round_size(size: int, config: Config = Config()) -> int:
    """The bytes a request of ``size`` takes from the allocator (``round_size``)."""
    if size < MIN_BLOCK:
        return MIN_BLOCK
    divisions = config.divisions(size)
    if divisions > 1 and size > MIN_BLOCK * divisions:
        floor = 1 << (size.bit_length() - 1)
        if floor == size:
            return size
        step = floor // divisions
        return size if size % step == 0 else (size // step + 1) * step
    return -(-size // MIN_BLOCK) * MIN_BLOCK


def segment_size(size: int, config: Config = Config()) -> int:
    """The bytes of the segment a rounded request gets when no cached block fits (``get_allocation_size``)."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return config.large_segment_size
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass(eq=False)
class Block:
    """A piece of a segment: allocated, free (cached) or, in an expandable segment, not yet mapped."""

    addr: int
    size: int
    small: bool
    stream: Hashable
    segment: int
    prev: Block | None = None
    next: Block | None = None
    allocated: bool = False
    mapped: bool = True
    requested: int = 0
    expandable: bool = False
    gc_base: int = 0
    tag: str = ""

    @property
    def key(self) -> tuple:
        return (str(self.stream), self.size, self.addr)

    @property
    def split(self) -> bool:
        return self.prev is not None or self.next is not None


class Pool:
    """The free blocks of one pool, ordered by (stream, size, address) as the C++ ``BlockComparatorSize``."""

    def __init__(self, small: bool) -> None:
        self.small = small
        self.keys: list[tuple] = []
        self.blocks: dict[tuple, Block] = {}
        self.unmapped: list[Block] = []
        self.calls = 0

    def insert(self, block: Block) -> None:
        block.gc_base = self.calls
        key = block.key
        bisect.insort(self.keys, key)
        self.blocks[key] = block

    def remove(self, block: Block) -> None:
        key = block.key
        del self.keys[bisect.bisect_left(self.keys, key)]
        del self.blocks[key]

    def at_least(self, stream: Hashable, size: int) -> Iterator[Block]:
        """The free blocks of ``stream`` of at least ``size`` bytes, smallest first."""
        stream = str(stream)
        for i in range(bisect.bisect_left(self.keys, (stream, size, -1)), len(self.keys)):
            key = self.keys[i]
            if key[0] != stream:
                return
            yield self.blocks[key]


class AddressSpace:
    """The virtual addresses ``cudaMalloc`` hands out: the highest free range that fits, taken from its top."""

    def __init__(self, top: int = 1 << 47, size: int = 1 << 46) -> None:
        self.free: list[tuple[int, int]] = [(top - size, size)]

    def take(self, size: int, at: int | None = None) -> int:
        """A free range of ``size`` bytes: at ``at`` when given (a recorded address), else the highest that fits."""
        if at is not None:
            for i, (start, length) in enumerate(self.free):
                if start <= at and at + size <= start + length:
                    self.free[i:i + 1] = [r for r in ((start, at - start), (at + size, start + length - at - size))
                                          if r[1]]
                    return at
            raise AllocatorError(f"address {at:#x} is not free for {size} bytes")
        for i in range(len(self.free) - 1, -1, -1):
            start, length = self.free[i]
            if length >= size:
                if length == size:
                    del self.free[i]
                else:
                    self.free[i] = (start, length - size)
                return start + length - size
        raise OutOfMemory("the virtual address space is exhausted")

    def give(self, addr: int, size: int) -> None:
        i = bisect.bisect(self.free, (addr, size))
        self.free.insert(i, (addr, size))
        merged: list[tuple[int, int]] = []
        for start, length in self.free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free = merged


@dataclass
class Counter:
    """A statistic of the allocator: its current value and peaks (overall, and since the last phase began)."""

    current: int = 0
    peak: int = 0
    phase_peak: int = 0

    def add(self, n: int) -> None:
        self.current += n
        if self.current > self.phase_peak:  # the phase's peak is never above the overall one
            self.phase_peak = self.current
            if self.current > self.peak:
                self.peak = self.current

    def reset(self) -> None:
        self.phase_peak = self.current


@dataclass(frozen=True)
class Overhead:
    """What the allocator adds beyond the requests, at one moment (bytes)."""

    requested: int
    #: Each live block's rounded size less its request.
    rounding: int
    #: Each live block's size less its rounded request: blocks handed out whole, not split.
    unsplit: int
    #: Free bytes at the end of a segment (never handed out, or freed there).
    tails: int
    #: Free bytes between live blocks.
    holes: int
    #: Live bytes of the requests tagged as workspaces, included in ``requested``.
    workspaces: int

    @property
    def allocated(self) -> int:
        return self.requested + self.rounding + self.unsplit

    @property
    def reserved(self) -> int:
        return self.allocated + self.tails + self.holes


@dataclass(frozen=True)
class PhasePeak:
    """The peaks of one phase, each statistic reset to its current value as the phase began."""

    name: str
    requested: int
    allocated: int
    reserved: int


@dataclass
class Allocator:
    """The caching allocator of one device. ``cap``: what ``set_per_process_memory_fraction`` allows, in bytes."""

    config: Config = field(default_factory=Config)
    cap: int | None = None
    space: AddressSpace = field(default_factory=AddressSpace)
    #: The card's memory: the size of an expandable segment's address range (80 GiB: an H100's).
    device_memory: int = 80 * GiB
    #: Whether to itemize what the allocator adds at the peak (:attr:`at_peak`; a walk of the free blocks at
    #: every new peak).
    itemize: bool = True
    #: Whether to record what the allocator does, as ``torch.cuda.memory._record_memory_history`` does
    #: (:attr:`trace`: ``(action, addr, size, stream, key)``, the actions of a snapshot's ``device_traces``).
    record: bool = False

    def __post_init__(self) -> None:
        self.pools = {True: Pool(True), False: Pool(False)}
        self.live: dict[Hashable, Block] = {}
        self.segments: dict[int, int] = {}
        self.requested = Counter()
        self.allocated = Counter()
        self.reserved = Counter()
        self.phases: list[PhasePeak] = []
        self.phase: str | None = None
        self.retries = 0
        self.rounded = 0
        self.workspaces = 0
        self.at_peak = Overhead(0, 0, 0, 0, 0, 0)
        self._rounded: dict[int, int] = {}  # round_size at this config, by request
        self.trace: list[tuple[str, int, int, Hashable, Hashable]] = []

    def _record(self, action: str, addr: int, size: int, stream: Hashable, key: Hashable = None) -> None:
        if self.record:
            self.trace.append((action, addr, size, stream, key))

    # -- events ------------------------------------------------------------------------------------------------

    def run(self, events: Iterable[tuple]) -> Allocator:
        """Feed events: ``("alloc", key, size[, stream[, tag]])``, ``("free", key)``, ``("phase", name)``."""
        for event in events:
            kind = event[0]
            if kind == "alloc":
                self.malloc(*event[1:])
            elif kind == "free":
                self.free(event[1])
            elif kind == "phase":
                self.begin(event[1])
            else:
                raise AllocatorError(f"unknown allocator event {kind!r}")
        self.end()
        return self

    def begin(self, name: str) -> None:
        """``torch.cuda.reset_peak_memory_stats()``, then a phase called ``name``."""
        self.end()
        self.phase = name
        for counter in (self.requested, self.allocated, self.reserved):
            counter.reset()

    def end(self) -> None:
        if self.phase is not None:
            self.phases.append(PhasePeak(self.phase, self.requested.phase_peak, self.allocated.phase_peak,
                                         self.reserved.phase_peak))
            self.phase = None

    def malloc(self, key: Hashable, size: int, stream: Hashable = 0, tag: str = "", at: int | None = None) -> Block:
        """Allocate ``size`` bytes for ``key``; ``at``: where cudaMalloc puts a new segment, if one is made."""
        if key in self.live:
            raise AllocatorError(f"allocation {key!r} is already live")
        rounded = self._round(size)
        pool = self.pools[rounded <= SMALL_SIZE]
        block = (self._cached(pool, stream, rounded) or self._grow(pool, stream, rounded, at)
                 or (self._release_oversize(pool, stream, rounded) and self._grow(pool, stream, rounded, at))
                 or (self._release_all() and self._grow(pool, stream, rounded, at, retry=True)))
        if block is None:
            raise OutOfMemory(f"allocating {size} bytes: reserved {self.reserved.current} + a new segment "
                              f"is over the cap of {self.cap} bytes")
        block = self._split(block, rounded)
        block.allocated, block.requested, block.tag = True, size, tag
        self.live[key] = block
        self._count(block, 1)
        self._record("alloc", block.addr, size, stream, key)
        if self.itemize and self.allocated.current > self.at_peak.allocated:
            self.at_peak = self.overhead()
        return block

    def free(self, key: Hashable) -> None:
        block = self.live.pop(key, None)
        if block is None:
            raise AllocatorError(f"free of {key!r}, which is not live")
        for action in ("free_requested", "free_completed"):
            self._record(action, block.addr, block.requested, block.stream, key)
        self._count(block, -1)
        block.allocated, block.requested, block.tag = False, 0, ""
        pool = self.pools[block.small]
        for neighbour in (block.prev, block.next):
            self._merge(block, neighbour, pool)
        pool.insert(block)

    # -- the rules ---------------------------------------------------------------------------------------------

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()``: release every cached segment that is not split."""
        self._release_all()

    def _cached(self, pool: Pool, stream: Hashable, size: int) -> Block | None:
        """``get_free_block``: the smallest cached block that fits, within the max_split_size rules."""
        if self.cap is not None and self.config.garbage_collection_threshold > 0:
            pool.calls += 1
        fits = pool.at_least(stream, size)
        block = next(fits, None)
        if block is None:
            return None
        while block.expandable and self.config.expandable_segments:
            # best fit counts the unmapped space after a block of an expandable segment as its own
            other = next(fits, None)
            if other is None or _expandable_size(other) >= _expandable_size(block):
                break
            block = other
        limit = self.config.max_split_size
        if size < limit <= block.size or (size >= limit and block.size >= size + self.config.max_non_split_rounding):
            return None
        pool.remove(block)
        return block

    def _grow(self, pool: Pool, stream: Hashable, size: int, at: int | None, retry: bool = False) -> Block | None:
        """``alloc_block``: a new segment (or, expandable, more pages), unless it would pass the cap."""
        self.retries += retry
        if self.cap is not None and self.config.garbage_collection_threshold > 0 and not retry:
            self._collect()
        segment = segment_size(size, self.config)
        if self.cap is not None and self.reserved.current + segment > self.cap:
            return None
        if self.config.expandable_segments:
            return self._expand(pool, stream, size)
        addr = self.space.take(segment, at)
        self.segments[addr] = segment
        self.reserved.add(segment)
        self._record("segment_alloc", addr, segment, stream)
        return Block(addr, segment, pool.small, stream, addr)

    def _split(self, block: Block, size: int) -> Block:
        """``alloc_found_block``: split off the front of the block when the rule allows."""
        remaining = block.size - size
        if block.small or self.config.expandable_segments:
            split = remaining >= MIN_BLOCK
        else:
            split = size < self.config.max_split_size and remaining > SMALL_SIZE
        if not split:
            return block
        front = Block(block.addr, size, block.small, block.stream, block.segment, block.prev, block,
                      expandable=block.expandable)
        if block.prev is not None:
            block.prev.next = front
        block.prev = front
        block.addr += size
        block.size = remaining
        self.pools[block.small].insert(block)
        return front

    def _merge(self, block: Block, other: Block | None, pool: Pool) -> None:
        if other is None or other.allocated or other.mapped != block.mapped:
            return
        if other is block.prev:
            block.addr, block.prev = other.addr, other.prev
            if other.prev is not None:
                other.prev.next = block
        else:
            block.next = other.next
            if other.next is not None:
                other.next.prev = block
        block.size += other.size
        if other.mapped:
            pool.remove(other)
        else:
            pool.unmapped.remove(other)

    def _release(self, block: Block) -> None:
        """``release_block``: a whole cached segment goes back to CUDA."""
        self.pools[block.small].remove(block)
        self.space.give(block.addr, block.size)
        del self.segments[block.segment]
        self.reserved.add(-block.size)
        self._record("segment_free", block.addr, block.size, block.stream)

    def _release_oversize(self, pool: Pool, stream: Hashable, size: int) -> bool:
        """``release_available_cached_blocks``: under max_split_size, free oversize cached segments to fit."""
        limit = self.config.max_split_size
        if limit == UNLIMITED:
            return False
        fits = [b for b in pool.at_least(stream, max(size, limit)) if not b.split]
        if fits:
            self._release(fits[0])
            return True
        oversize = [b for b in pool.at_least(stream, limit) if not b.split][::-1]
        released = 0
        for block in oversize:
            if released >= max(size, limit):
                break
            released += block.size
            self._release(block)
        return released >= max(size, limit)

    def _release_all(self) -> bool:
        """``release_cached_blocks``: every cached segment that is not split goes back (expandable: its pages),
        the large pool's first."""
        for pool in (self.pools[False], self.pools[True]):
            for key in list(pool.keys):
                block = pool.blocks[key]
                if block.expandable:
                    self._unmap(block, pool)
                elif not block.split:
                    self._release(block)
        return True

    def _collect(self) -> None:
        """``garbage_collect_cached_blocks``: release unsplit cached large segments older than the average."""
        assert self.cap is not None
        threshold = int(self.config.garbage_collection_threshold * self.cap)
        if self.reserved.current <= threshold:
            return
        target = self.reserved.current - threshold
        pool = self.pools[False]
        ages = {b.key: pool.calls - b.gc_base for b in pool.blocks.values() if not b.split}
        reclaimed, freed = 0, True
        while reclaimed < target and freed and ages:
            average = sum(ages.values()) / len(ages)
            freed = False
            for key in list(pool.keys):
                block = pool.blocks[key]
                if key in ages and not block.expandable and ages[key] >= average:
                    freed = True
                    reclaimed += block.size
                    del ages[key]
                    self._release(block)

    # -- expandable segments -----------------------------------------------------------------------------------

    def _page(self, pool: Pool) -> int:
        return SMALL_BUFFER if pool.small else self.config.large_segment_size

    def _expand(self, pool: Pool, stream: Hashable, size: int) -> Block | None:
        """``try_allocate_expandable_block``: map pages at the lowest unmapped range that, with the free block
        before it, holds the request; a pool's first request reserves a segment as large as the address space."""
        candidate = None
        for unmapped in sorted(pool.unmapped, key=lambda b: b.addr):
            if unmapped.stream != stream:
                continue
            start = unmapped.prev if unmapped.prev is not None and not unmapped.prev.allocated else unmapped
            room, b = 0, start
            while b is not None and not b.allocated and room < size:
                room, b = room + b.size, b.next
            if room >= size:
                candidate = start
                break
        if candidate is None:
            length = -(-self.device_memory // self._page(pool)) * self._page(pool)
            addr = self.space.take(length)
            self.segments[addr] = 0
            candidate = Block(addr, length, pool.small, stream, addr, mapped=False, expandable=True)
            pool.unmapped.append(candidate)
        if not candidate.mapped:
            candidate = self._map(candidate, min(candidate.size, size), pool)
        while candidate.size < size:
            assert candidate.next is not None
            candidate = self._map(candidate.next, min(size - candidate.size, candidate.next.size), pool)
        pool.remove(candidate)
        return candidate

    def _map(self, block: Block, size: int, pool: Pool) -> Block:
        """``map_block``: map whole pages from the start of an unmapped block, and merge with free neighbours."""
        page = self._page(pool)
        length = min(-(-size // page) * page, block.size)
        pool.unmapped.remove(block)
        if length < block.size:
            rest = Block(block.addr + length, block.size - length, block.small, block.stream, block.segment,
                         block, block.next, mapped=False, expandable=True)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = length
            pool.unmapped.append(rest)
        block.mapped = True
        self.reserved.add(length)
        self._record("segment_map", block.addr, length, block.stream)
        self.segments[block.segment] += length
        for neighbour in (block.prev, block.next):
            self._merge(block, neighbour, pool)
        pool.insert(block)
        return block

    def _unmap(self, block: Block, pool: Pool) -> None:
        """``unmap_block``: give back the whole pages inside a free block of an expandable segment."""
        page = self._page(pool)
        first = -(-(block.addr - block.segment) // page) * page + block.segment
        last = (block.addr + block.size - block.segment) // page * page + block.segment
        if last <= first:
            return
        pool.remove(block)
        pieces = [(block.addr, first - block.addr, True), (first, last - first, False),
                  (last, block.addr + block.size - last, True)]
        prev = block.prev
        made = []
        for addr, length, mapped in pieces:
            if not length:
                continue
            piece = Block(addr, length, block.small, block.stream, block.segment, prev, None, mapped=mapped,
                          expandable=True)
            if prev is not None:
                prev.next = piece
            prev = piece
            made.append(piece)
        made[-1].next = block.next
        if block.next is not None:
            block.next.prev = made[-1]
        for piece in made:
            if piece.mapped:
                pool.insert(piece)
            else:
                pool.unmapped.append(piece)
                for neighbour in (piece.prev, piece.next):
                    self._merge(piece, neighbour, pool)
        self.reserved.add(-(last - first))
        self._record("segment_unmap", first, last - first, block.stream)
        self.segments[block.segment] -= last - first

    # -- reports -----------------------------------------------------------------------------------------------

    def blocks(self) -> list[Block]:
        """Every block of every segment (allocated, cached, and unmapped), by segment and address."""
        found = [*self.live.values()]
        for pool in self.pools.values():
            found += [*pool.blocks.values(), *pool.unmapped]
        return sorted(found, key=lambda b: (b.segment, b.addr))

    def _count(self, block: Block, sign: int) -> None:
        self.requested.add(sign * block.requested)
        self.allocated.add(sign * block.size)
        self.rounded += sign * self._round(block.requested)
        if block.tag == "workspace":
            self.workspaces += sign * block.requested

    def _round(self, size: int) -> int:
        rounded = self._rounded.get(size)
        if rounded is None:
            rounded = self._rounded[size] = round_size(size, self.config)
        return rounded

    def overhead(self) -> Overhead:
        """What the allocator adds beyond the requests now: rounding, whole blocks, free tails and holes."""
        tails = holes = 0
        for pool in self.pools.values():
            for block in pool.blocks.values():
                if block.next is None or not block.next.mapped:
                    tails += block.size
                else:
                    holes += block.size
        return Overhead(self.requested.current, self.rounded - self.requested.current,
                        self.allocated.current - self.rounded, tails, holes, self.workspaces)


def _expandable_size(block: Block) -> int:
    return block.size + (block.next.size if block.next is not None and not block.next.mapped else 0)
