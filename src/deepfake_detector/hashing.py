"""Perceptual-hash neighbours without an O(n^2) scan.

Pigeonhole: split the 64-bit pHash into (max_distance + 1) chunks; any two hashes within
`max_distance` bits agree exactly on at least one chunk, so candidates come from chunk buckets.
Used by validation (conflicting labels) and by the split (near-duplicates share a split).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_pairs(hashes: Sequence[str | None], max_distance: int, bits: int = 64) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose hex hashes differ in at most max_distance bits."""
    ints = [int(h, 16) if isinstance(h, str) and h else None for h in hashes]
    n_chunks = min(max_distance + 1, bits)
    bounds = [round(k * bits / n_chunks) for k in range(n_chunks + 1)]
    pairs: set[tuple[int, int]] = set()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mask = (1 << (hi - lo)) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, h in enumerate(ints):
            if h is not None:
                buckets[(h >> lo) & mask].append(i)
        for members in buckets.values():
            for a_pos, i in enumerate(members):
                for j in members[a_pos + 1:]:
                    if (i, j) not in pairs and hamming(ints[i], ints[j]) <= max_distance:
                        pairs.add((i, j))
    return pairs


def components(n: int, pairs: set[tuple[int, int]]) -> list[int]:
    """Union-find: a component id for each of n items linked by pairs."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]
