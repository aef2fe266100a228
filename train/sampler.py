"""Dynamic duration-bucketed batch sampler: deterministic, DDP-sharded and resumable.

Why this shape (a simplified lhotse ``DynamicBucketingSampler``):

* **Dynamic batches.** A batch holds as many utterances as fit in ``max_duration`` seconds of
  *padded* audio (batch size x longest utterance), so memory per step is roughly constant
  whether the utterances are 1 s or 15 s long.
* **Buckets.** Utterances are grouped into ``num_buckets`` duration ranges of equal count
  (quantiles) and batched only within their bucket, so little of a batch is padding.
* **Deterministic.** Everything random comes from ``numpy.random.default_rng([seed, epoch])``:
  the same seed and epoch give the same batches on every machine and every rank, which is what
  lets each rank pick its own shard without communicating.
* **DDP.** Batches are dealt round-robin to ranks. All ranks must run the same number of steps
  (a rank waiting in all-reduce for a peer that finished would hang), so when the batch count
  is not a multiple of ``world_size`` the largest batches are split in two until it is:
  shards stay disjoint and together cover every utterance of the epoch.
* **Resumable.** :meth:`state_dict` holds the epoch and how many of this rank's batches were
  consumed; after :meth:`load_state_dict` the next iteration starts exactly at the next batch.
  The training loop, not the sampler, counts consumed batches, because a DataLoader reads the
  sampler ahead of what the model has seen (prefetching).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["DynamicBucketSampler"]


class DynamicBucketSampler:
    """Yields lists of dataset indices; use as ``DataLoader(..., batch_sampler=sampler)``.

    Args:
        durations: duration in seconds of each dataset item.
        max_duration: budget per batch in seconds of padded audio. An item longer than the
            budget would never fit; it is put in a batch of its own (the dataset filters such
            items beforehand, see ``DataConfig.max_utt_duration``).
        num_buckets: number of equal-count duration buckets.
        repeats: per-item sampling weight; ``r`` means ``floor(r)`` copies per epoch plus one
            more with probability ``r - floor(r)`` (drawn anew each epoch). ``None``: all 1.
        shuffle: shuffle within buckets and the batch order (off for validation).
        seed, rank, world_size: determinism and DDP sharding.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_duration: float,
        num_buckets: int = 8,
        repeats: Sequence[float] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if max_duration <= 0:
            raise ValueError(f"max_duration must be > 0, got {max_duration}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.durations = np.asarray(durations, dtype=np.float64)
        if self.durations.ndim != 1 or len(self.durations) == 0:
            raise ValueError("durations must be a non-empty 1-D sequence")
        self.repeats = (
            np.ones(len(self.durations)) if repeats is None else np.asarray(repeats, np.float64)
        )
        if self.repeats.shape != self.durations.shape or np.any(self.repeats <= 0):
            raise ValueError("repeats must be positive, one per duration")
        self.max_duration = float(max_duration)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        # Bucket edges: duration quantiles over the dataset (fixed for the whole run).
        qs = np.linspace(0, 1, num_buckets + 1)[1:-1]
        self._edges = np.unique(np.quantile(self.durations, qs)) if len(qs) else np.zeros(0)
        self.epoch = 0
        self._skip = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    # ------------------------------------------------------------------ state
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate (changes the shuffle); resets the resume position."""
        self.epoch = int(epoch)
        self._skip = 0

    def state_dict(self, batches_done: int) -> dict[str, int]:
        """State to checkpoint, given how many of this epoch's batches the loop consumed."""
        return {"epoch": self.epoch, "batches_done": int(batches_done), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration starts at batch ``batches_done`` of epoch ``epoch``."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, sampler has {self.seed}")
        self.epoch = int(state["epoch"])
        self._skip = int(state["batches_done"])

    # ------------------------------------------------------------------ batches
    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch (every rank's), in order; batch ``i`` goes to rank
        ``i % world_size``. Cached for the current epoch."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        items = self._expand(rng)
        buckets = np.searchsorted(self._edges, self.durations[items], side="right")
        batches: list[list[int]] = []
        for b in range(len(self._edges) + 1):
            members = items[buckets == b]
            if self.shuffle:
                members = rng.permutation(members)
            batches += self._pack(members)
        if self.shuffle:
            order = rng.permutation(len(batches))
            batches = [batches[i] for i in order]
        batches = self._even_out(batches)
        self._cache = (epoch, batches)
        return batches

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch (including already consumed ones)."""
        return len(self.epoch_batches()) // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()[self.rank :: self.world_size]
        start, self._skip = self._skip, 0
        yield from batches[start:]

    def _expand(self, rng: np.random.Generator) -> np.ndarray:
        """Item indices of one epoch with the fractional repeats drawn."""
        whole = np.floor(self.repeats).astype(np.int64)
        frac = self.repeats - whole
        extra = rng.random(len(frac)) < frac
        counts = whole + extra
        return np.repeat(np.arange(len(self.durations)), counts)

    def _pack(self, members: np.ndarray) -> list[list[int]]:
        """Greedily fill batches in order while batch size x longest <= max_duration."""
        batches: list[list[int]] = []
        cur: list[int] = []
        longest = 0.0
        for i in members.tolist():
            d = float(self.durations[i])
            new_longest = max(longest, d)
            if cur and new_longest * (len(cur) + 1) > self.max_duration:
                batches.append(cur)
                cur, new_longest = [], d
            cur.append(i)
            longest = new_longest
        if cur:
            batches.append(cur)
        return batches

    def _even_out(self, batches: list[list[int]]) -> list[list[int]]:
        """Make the batch count a multiple of world_size without dropping or duplicating.

        The batch with the most utterances is split in two until the count is a multiple;
        halves of a batch that fitted the budget fit it too. Only when no batch has two
        utterances left (an epoch with fewer utterances than ranks) are the last few dropped.
        """
        n = self.world_size
        batches = list(batches)
        while len(batches) % n:
            sizes = [len(b) for b in batches]
            k = int(np.argmax(sizes)) if batches else 0
            if not batches or sizes[k] < 2:
                return batches[: len(batches) - len(batches) % n]
            b = batches[k]
            batches[k : k + 1] = [b[: len(b) // 2], b[len(b) // 2 :]]
        return batches
