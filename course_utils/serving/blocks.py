"""Paged KV memory: fixed-size blocks, a free list with reference counts, per-sequence block
tables, prefix caching by block hash, and copy-on-write (PagedAttention, Kwon et al. 2023).

A contiguous KV cache reserves ``max_len`` slots per sequence up front, so a sequence that stops
after ``n`` tokens wastes ``1 − n / max_len`` of its reservation. A paged cache cuts the memory
into blocks of ``B`` token slots and gives a sequence a new block only when its last one is full;
the waste is at most ``B − 1`` slots per sequence (the unfilled tail of its last block).

* **Block table.** Token ``i`` of a sequence lives in physical block ``table[i // B]`` at offset
  ``i % B``, i.e. in the flat slot ``table[i // B] · B + i % B`` of the cache.
* **Reference counts.** A block may appear in several block tables (a shared prompt prefix, or a
  forked sequence). It returns to the free list when its count drops to 0.
* **Prefix caching.** A *full* block holding tokens ``t`` after a prefix whose last block had
  hash ``h_prev`` gets the hash ``h = hash((h_prev, t))``: equal hashes mean equal token
  prefixes, hence equal keys and values (causal attention: a token's K/V depend only on the tokens
  before it). A new sequence looks its full prompt blocks up by hash and reuses the hits instead
  of recomputing them. A freed cached block keeps its hash while it waits on the free list, so a
  later request can still revive it; it is forgotten only when the allocator hands it out again
  (least recently freed first).
* **Copy-on-write.** Writing into a block that another table also holds (refcount > 1) first
  copies it into a fresh block; the caller copies the K/V data for the returned ``(src, dst)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from course_utils import checks

__all__ = ["BlockAllocator", "BlockTable", "NoFreeBlocksError", "block_hash"]


class NoFreeBlocksError(RuntimeError):
    """The allocator has no free block left (the scheduler preempts a sequence and retries)."""


def block_hash(parent_hash: int | None, token_ids: Sequence[int]) -> int:
    """Hash of a full block: its tokens and, through ``parent_hash``, every token before them."""
    return hash((parent_hash, tuple(token_ids)))


class BlockAllocator:
    """Hands out block ids ``0 .. num_blocks − 1`` from a free list and counts their references.

    The free list is ordered (least recently freed first), so blocks that still hold a cached
    prefix are reused as late as possible.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        checks.positive_int(num_blocks=num_blocks, block_size=block_size)
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = [0] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._hash_of: dict[int, int] = {}  # block id -> hash, for full cached blocks
        self._block_of: dict[int, int] = {}  # hash -> block id
        self._tokens_of: dict[int, tuple[int, ...]] = {}  # block id -> its tokens (guards against collisions)

    @property
    def num_free(self) -> int:
        """Blocks that can be handed out now (free, possibly still holding a cached prefix)."""
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def _check_id(self, block: int) -> None:
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < self.num_blocks:
            raise ValueError(f"block must be an int in [0, {self.num_blocks}), got {block!r}")

    def allocate(self) -> int:
        """Take the least recently freed block (refcount 0 → 1); forget any prefix it cached.

        Raises:
            NoFreeBlocksError: every block is in use.
        """
        if not self._free:
            raise NoFreeBlocksError(f"all {self.num_blocks} KV blocks are in use")
        block, _ = self._free.popitem(last=False)
        self._uncache(block)
        self.ref_counts[block] = 1
        return block

    def incref(self, block: int) -> None:
        """One more table holds ``block`` (a free cached block is taken back off the free list)."""
        self._check_id(block)
        if self.ref_counts[block] == 0:
            if block not in self._hash_of:
                raise ValueError(f"block {block} is free and caches nothing: allocate() a block instead")
            del self._free[block]
        self.ref_counts[block] += 1

    def free(self, block: int) -> None:
        """Drop one reference; at 0 the block goes to the end of the free list (keeping its hash).

        Raises:
            ValueError: ``block`` is not in use (a double free).
        """
        self._check_id(block)
        if self.ref_counts[block] == 0:
            raise ValueError(f"block {block} is already free (double free)")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self._free[block] = None

    # prefix cache -------------------------------------------------------------------------
    def cache(self, block: int, block_hash_: int, token_ids: Sequence[int]) -> None:
        """Register a full, in-use ``block`` under its hash (no-op if the hash is already cached)."""
        self._check_id(block)
        if self.ref_counts[block] == 0:
            raise ValueError(f"block {block} is free; only a block in use can be cached")
        if len(token_ids) != self.block_size:
            raise ValueError(f"only full blocks are cached: got {len(token_ids)} tokens, block_size={self.block_size}")
        if block_hash_ in self._block_of or block in self._hash_of:
            return
        self._hash_of[block] = block_hash_
        self._block_of[block_hash_] = block
        self._tokens_of[block] = tuple(token_ids)

    def lookup(self, block_hash_: int, token_ids: Sequence[int]) -> int | None:
        """The block caching exactly these tokens under this hash, or None."""
        block = self._block_of.get(block_hash_)
        if block is None or self._tokens_of[block] != tuple(token_ids):
            return None
        return block

    def is_cached(self, block: int) -> bool:
        return block in self._hash_of

    @property
    def num_cached(self) -> int:
        return len(self._hash_of)

    def _uncache(self, block: int) -> None:
        h = self._hash_of.pop(block, None)
        if h is not None:
            del self._block_of[h]
            del self._tokens_of[block]

    def reset_prefix_cache(self) -> None:
        """Forget every cached hash (blocks in use stay allocated)."""
        self._hash_of.clear()
        self._block_of.clear()
        self._tokens_of.clear()

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (used by the tests)."""
        assert all(c >= 0 for c in self.ref_counts), "negative refcount"
        free = set(self._free)
        assert len(free) == len(self._free)
        assert free == {b for b, c in enumerate(self.ref_counts) if c == 0}, "free list != refcount-0 blocks"
        assert {self._block_of[h] for h in self._block_of} == set(self._hash_of)
        assert all(self._block_of[h] == b for b, h in self._hash_of.items())


class BlockTable:
    """The blocks of one sequence, in order, and how many token slots of them are filled.

    ``num_tokens`` counts the slots written so far; they occupy ``ceil(num_tokens / B)`` blocks.
    """

    def __init__(self, allocator: BlockAllocator) -> None:
        checks.instance("allocator", allocator, BlockAllocator)
        self.allocator = allocator
        self.blocks: list[int] = []
        self.num_tokens = 0

    @property
    def block_size(self) -> int:
        return self.allocator.block_size

    def slot(self, position: int) -> int:
        """Flat cache slot of token ``position``: ``blocks[position // B] · B + position % B``."""
        if not 0 <= position < len(self.blocks) * self.block_size:
            raise ValueError(f"position {position} is outside the {len(self.blocks)} allocated blocks")
        return self.blocks[position // self.block_size] * self.block_size + position % self.block_size

    def blocks_needed(self, num_new_tokens: int) -> int:
        """How many new blocks appending ``num_new_tokens`` slots would allocate."""
        checks.non_negative_int(num_new_tokens=num_new_tokens)
        total = -(-(self.num_tokens + num_new_tokens) // self.block_size)
        return max(0, total - len(self.blocks))

    def append_slots(self, num_new_tokens: int) -> list[tuple[int, int]]:
        """Reserve slots for ``num_new_tokens`` more tokens, allocating blocks as needed.

        If the partly filled last block is shared (refcount > 1, after a :meth:`fork`) it is
        copied first (copy-on-write). Returns the ``(src, dst)`` block copies the caller must
        apply to the K/V data. All-or-nothing: on :class:`NoFreeBlocksError` nothing changed.
        """
        checks.non_negative_int(num_new_tokens=num_new_tokens)
        alloc = self.allocator
        copies: list[tuple[int, int]] = []
        writes_into_last = num_new_tokens > 0 and self.num_tokens % self.block_size != 0
        cow = writes_into_last and alloc.ref_counts[self.blocks[-1]] > 1
        needed = self.blocks_needed(num_new_tokens) + (1 if cow else 0)
        if needed > alloc.num_free:
            raise NoFreeBlocksError(f"need {needed} blocks, {alloc.num_free} free")
        if cow:
            shared = self.blocks[-1]
            private = alloc.allocate()
            alloc.free(shared)
            self.blocks[-1] = private
            copies.append((shared, private))
        for _ in range(self.blocks_needed(num_new_tokens)):
            self.blocks.append(alloc.allocate())
        self.num_tokens += num_new_tokens
        return copies

    def append_cached(self, block: int) -> None:
        """Append a full block found in the prefix cache (its slots are already filled)."""
        if self.num_tokens % self.block_size:
            raise ValueError("a cached block can only follow full blocks")
        self.allocator.incref(block)
        self.blocks.append(block)
        self.num_tokens += self.block_size

    def fork(self) -> BlockTable:
        """A second table sharing every block (refcounts + 1); writes will copy-on-write."""
        child = BlockTable(self.allocator)
        for block in self.blocks:
            self.allocator.incref(block)
        child.blocks = list(self.blocks)
        child.num_tokens = self.num_tokens
        return child

    def free(self) -> None:
        """Release every block (in reverse, so a prefix's head stays cached longest)."""
        for block in reversed(self.blocks):
            self.allocator.free(block)
        self.blocks = []
        self.num_tokens = 0
