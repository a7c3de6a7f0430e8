"""The caching allocator's rules on small cases worked by hand from c10/cuda/CUDACachingAllocator.cpp."""

from __future__ import annotations

import pytest

from symbert.training.allocator import (
    RELEASES,
    Allocator,
    AllocatorError,
    OutOfMemory,
    from_environment,
    parse_config,
    round_size,
    segment_size,
)

KiB = 1024
MiB = 1024 * KiB


def test_rounding_to_512_bytes():
    assert [round_size(n) for n in (1, 512, 513, 3072, 1_000_000)] == [512, 512, 1024, 3072, 1_000_448]


def test_roundup_power2_divisions():
    four = parse_config("roundup_power2_divisions:4")
    # 1,200,000 lies in [1 MiB, 2 MiB), cut in four steps of 256 KiB: the next step is 1 MiB + 256 KiB.
    assert round_size(1_200_000, four) == 1_310_720
    assert round_size(2 * MiB, four) == 2 * MiB  # a power of two stays
    assert round_size(2000, four) == 2048  # not above 512 x 4: plain 512-byte rounding
    intervals = parse_config("roundup_power2_divisions:[256:1,512:2,1024:4,>:8]")
    # the first entry also covers the intervals below it; 1 division means plain rounding
    assert round_size(100 * MiB + 1, intervals) == 100 * MiB + 512
    # interval 9 ([512 MiB, 1 GiB)) has 2 divisions: steps of 256 MiB
    assert round_size(600 * MiB, intervals) == 768 * MiB
    # interval 10 ([1 GiB, 2 GiB)) has 4: steps of 256 MiB; interval 11 on has 8: steps of 256 MiB in [2, 4) GiB
    assert round_size(1100 * MiB, intervals) == 1280 * MiB
    assert round_size(2049 * MiB, intervals) == 2304 * MiB


def test_segment_sizes():
    assert segment_size(1 * MiB) == 2 * MiB  # small pool
    assert segment_size(1 * MiB + 512) == 20 * MiB  # large pool, under 10 MiB
    assert segment_size(10 * MiB - 512) == 20 * MiB
    assert segment_size(10 * MiB) == 10 * MiB  # 10 MiB and more: rounded up to 2 MiB
    assert segment_size(11 * MiB + 512) == 12 * MiB


def test_small_pool_splits_and_packs():
    a = Allocator()
    first = a.malloc("a", 1000)
    second = a.malloc("b", 1000)
    assert (first.size, second.addr - first.addr) == (1024, 1024)
    assert (a.requested.current, a.allocated.current, a.reserved.current) == (2000, 2048, 2 * MiB)


def test_large_block_is_not_split_when_the_remainder_is_at_most_1_mib():
    a = Allocator()
    a.malloc("a", 9 * MiB)  # a 20 MiB segment, split: 11 MiB stay cached
    assert (a.allocated.current, a.reserved.current) == (9 * MiB, 20 * MiB)
    a.malloc("b", 10 * MiB)  # the 11 MiB block fits; the remainder, 1 MiB, is not more than 1 MiB: taken whole
    assert (a.requested.current, a.allocated.current, a.reserved.current) == (19 * MiB, 20 * MiB, 20 * MiB)
    a.malloc("c", 1 * MiB + 512)  # nothing cached: a new 20 MiB segment
    assert a.reserved.current == 40 * MiB
    overhead = a.overhead()
    assert (overhead.rounding, overhead.unsplit, overhead.tails, overhead.holes) == (0, 1 * MiB, 19 * MiB - 512, 0)


def test_best_fit_then_address_and_merging():
    a = Allocator()
    blocks = [a.malloc(k, 4 * MiB) for k in "abc"]  # one 20 MiB segment: a, b, c, then 8 MiB free
    base = blocks[0].addr
    a.free("b")
    a.free("a")  # merges with b: 8 MiB free at the segment's start
    free = sorted((b.addr - base, b.size) for b in a.pools[False].blocks.values())
    assert free == [(0, 8 * MiB), (12 * MiB, 8 * MiB)]
    assert a.malloc("d", 8 * MiB).addr == base  # two 8 MiB blocks fit exactly: the lower address wins
    a.free("c")  # merges with the tail: 12 MiB free
    assert [(b.addr - base, b.size) for b in a.pools[False].blocks.values()] == [(8 * MiB, 12 * MiB)]
    assert a.malloc("e", 6 * MiB).addr == base + 8 * MiB


def test_out_of_memory_releases_cached_segments_and_retries_once():
    a = Allocator(cap=40 * MiB)
    a.malloc("a", 15 * MiB)  # a 16 MiB segment
    a.free("a")  # cached, not split
    a.malloc("b", 30 * MiB)  # 16 + 30 > 40: release the cached segment, then 30 <= 40
    assert (a.reserved.current, a.reserved.peak, a.retries) == (30 * MiB, 30 * MiB, 1)
    with pytest.raises(OutOfMemory):
        a.malloc("c", 12 * MiB)  # 30 + 12 > 40 and nothing cached to release


def test_a_split_segment_is_not_released():
    a = Allocator(cap=40 * MiB)
    a.malloc("x", 2 * MiB)
    a.malloc("y", 2 * MiB)  # same 20 MiB segment
    a.free("x")  # cached, but its segment is split (y is live)
    with pytest.raises(OutOfMemory):
        a.malloc("z", 30 * MiB)


def test_max_split_size():
    a = Allocator(config=parse_config("max_split_size_mb:40"))
    a.malloc("a", 50 * MiB)
    a.free("a")
    a.malloc("b", 30 * MiB)  # under 40 MiB: an oversize cached block is not used for it
    assert a.reserved.current == 80 * MiB
    a.malloc("c", 45 * MiB)  # 50 MiB cached is within 20 MiB of 45: used whole, not split
    assert a.allocated.current == 30 * MiB + 50 * MiB


def test_garbage_collection_threshold():
    a = Allocator(config=parse_config("garbage_collection_threshold:0.5"), cap=100 * MiB)
    a.malloc("a", 30 * MiB)
    a.malloc("b", 30 * MiB)
    a.free("a")
    a.free("b")  # 60 MiB cached, over half the cap
    a.malloc("c", 40 * MiB)  # no cached block fits: both cached segments are as old as the average, both go
    assert a.reserved.current == 40 * MiB
    plain = Allocator(cap=100 * MiB)
    for key in "ab":
        plain.malloc(key, 30 * MiB)
    plain.free("a")
    plain.free("b")
    plain.malloc("c", 40 * MiB)
    assert plain.reserved.current == 100 * MiB


def test_garbage_collection_releases_the_segments_older_than_the_average():
    a = Allocator(config=parse_config("garbage_collection_threshold:0.5"), cap=200 * MiB)
    a.malloc("a", 40 * MiB)  # searches of the large pool: 1
    a.malloc("b", 40 * MiB)  # 2
    a.free("a")  # cached at search 2
    a.malloc("c", 42 * MiB)  # 3: nothing cached fits; 80 MiB reserved is under the threshold (100 MiB)
    a.free("b")  # cached at search 3
    a.free("c")  # cached at search 3
    a.malloc("d", 44 * MiB)  # 4: 122 MiB reserved; ages 2, 1, 1 (average 4/3): only a's segment is released
    assert a.reserved.current == (40 + 42 + 44) * MiB
    assert sorted(b.size for b in a.pools[False].blocks.values()) == [40 * MiB, 42 * MiB]


def test_bad_events_are_errors():
    a = Allocator()
    a.malloc("x", 1)
    with pytest.raises(AllocatorError, match="already live"):
        a.malloc("x", 1)
    with pytest.raises(AllocatorError, match="not live"):
        a.free("y")
    with pytest.raises(AllocatorError, match="unknown allocator event"):
        a.run([("realloc", "x", 2)])


def test_expandable_segments_map_pages_and_always_split():
    a = Allocator(config=parse_config("expandable_segments:True"))
    first = a.malloc("a", 5 * MiB)  # one 20 MiB page mapped, the block split off exactly
    assert (a.allocated.current, a.reserved.current) == (5 * MiB, 20 * MiB)
    second = a.malloc("b", 18 * MiB)  # the 15 MiB free block plus one more page, contiguous
    assert (second.addr - first.addr, a.allocated.current, a.reserved.current) == (5 * MiB, 23 * MiB, 40 * MiB)
    a.free("a")
    a.free("b")
    a.empty_cache()  # every whole free page goes back
    assert a.reserved.current == 0
    a.malloc("c", 1000)  # the small pool: 2 MiB pages
    assert (a.allocated.current, a.reserved.current) == (1024, 2 * MiB)


def test_expandable_best_fit_counts_the_room_to_grow():
    """A free block before unmapped pages counts as large as it could grow, so a hole elsewhere that fits
    wins over it even when the hole is larger."""
    a = Allocator(config=parse_config("expandable_segments:True"))
    first = a.malloc("a", 5 * MiB)
    a.malloc("h", 9 * MiB)
    a.malloc("c", 1 * MiB + 512)  # the first 20 MiB page now ends with 5 MiB - 512 free, then unmapped pages
    a.free("h")  # a 9 MiB hole
    assert a.malloc("d", 4 * MiB).addr == first.addr + 5 * MiB


def test_phases_reset_the_peaks():
    a = Allocator()
    a.run([("phase", "one"), ("alloc", "x", 3 * MiB), ("alloc", "y", 3 * MiB), ("free", "y"),
           ("phase", "two"), ("alloc", "z", 1024)])
    assert [(p.name, p.requested, p.allocated, p.reserved) for p in a.phases] == [
        ("one", 6 * MiB, 6 * MiB, 20 * MiB),
        ("two", 3 * MiB + 1024, 3 * MiB + 1024, 22 * MiB),
    ]


def test_workspaces_are_itemised():
    a = Allocator()
    a.run([("alloc", "w", 32 * MiB, 0, "workspace"), ("alloc", "t", 1000)])
    assert (a.at_peak.workspaces, a.at_peak.requested, a.at_peak.rounding) == (32 * MiB, 32 * MiB + 1000, 24)


def test_workspace_sizes_per_release():
    assert RELEASES["2.11"].workspaces("sm90") == (32 * MiB, 1 * MiB)
    assert RELEASES["2.13"].workspaces("sm90") == (32 * MiB, 0)
    assert RELEASES["2.13"].workspaces("sm80") == (8 * MiB + 128 * KiB, 0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_split_size_mb:10", "too small"),
        ("max_split_size_mb:big", "whole number"),
        ("garbage_collection_threshold:1.5", "between 0 and 1"),
        ("garbage_collection_threshold:x", "expected a number"),
        ("expandable_segments:yes", "True or False"),
        ("roundup_power2_divisions:3", "power of two"),
        ("roundup_power2_divisions:[256:3]", "power of two"),
        ("roundup_power2_divisions:[100:2]", "power of two"),
        ("roundup_power2_divisions:[256:2", "unclosed"),
        ("colour:blue", "not one the simulation knows"),
        ("backend:cudaMallocAsync", "native caching allocator"),
        ("max_non_split_rounding_mb:19", "too small"),
        ("max_split_size_mb:²", "whole number"),
        ("max_split_size_mb", "key:value"),
    ],
)
def test_bad_settings_are_one_line_errors(text, message):
    with pytest.raises(AllocatorError, match=message) as error:
        parse_config(text)
    assert "\n" not in str(error.value)


def test_settings_from_the_environment():
    """PYTORCH_ALLOC_CONF wins over the older PYTORCH_CUDA_ALLOC_CONF; host-allocator settings change nothing."""
    both = {"PYTORCH_ALLOC_CONF": "max_split_size_mb:20", "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}
    assert from_environment(both).max_split_size == 20 * MiB
    assert from_environment({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}).max_split_size == 64 * MiB
    assert from_environment({}) == parse_config("pinned_use_background_threads:True,backend:native")


def test_settings_combine():
    config = parse_config(" max_split_size_mb:64, expandable_segments:False,roundup_power2_divisions:[64:8,>:2] ")
    assert (config.max_split_size, config.expandable_segments) == (64 * MiB, False)
    assert config.roundup_power2_divisions[:7] == (8,) * 7 and config.roundup_power2_divisions[7:] == (2,) * 9
