"""Each data-parallel rank's share of every optimizer step's windows.

All ranks follow one global stream of window starts (one seeded :class:`WindowSampler`): step
``s`` of a run with ``W`` ranks and ``k`` windows per rank consumes global windows
``s*W*k ... s*W*k + W*k - 1``, and rank ``r`` trains on the ``k`` of them starting at
``s*W*k + r*k``, drawing and discarding the others' starts without reading their tokens. So

* the ranks read disjoint windows, and ``W`` ranks with ``k`` windows each see exactly the windows
  one process with ``W*k`` windows sees (the data-parallel run is the single-process run);
* between steps the sampler state is the same on every rank, so one saved state restores all of
  them, and resuming with another world size re-shards deterministically: the stream continues
  where it stopped and the new ranks split it as above.
"""

from __future__ import annotations

from typing import Any

from anetrain.data.errors import DataError
from anetrain.data.tokens import Window, WindowSampler


class ShardedSampler:
    """Rank ``rank`` of ``world_size``'s windows from a shared seeded stream."""

    def __init__(self, base: WindowSampler, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in a world of {world_size} rank(s)")
        self.base = base
        self.rank = rank
        self.world_size = world_size

    def next_windows(self, per_rank: int) -> list[Window]:
        """This rank's ``per_rank`` windows of the next step (the step consumes
        ``per_rank * world_size`` windows of the global stream)."""
        self.base.skip(self.rank * per_rank)
        mine = [self.base.next_window() for _ in range(per_rank)]
        self.base.skip((self.world_size - self.rank - 1) * per_rank)
        return mine

    def next_index(self, per_rank: int) -> int:
        """The global stream index of this rank's first window of the next step."""
        return self.base.windows_drawn + self.rank * per_rank

    @property
    def windows_drawn(self) -> int:
        """Windows of the global stream consumed so far (all ranks together)."""
        return self.base.windows_drawn

    def state_dict(self) -> dict[str, Any]:
        """The shared stream's state (identical on every rank between steps), plus the world
        size it was saved with, for the record: loading does not require the same one."""
        return {**self.base.state_dict(), "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)
