"""Turn raw source text into normalized, deduplicated sentences split train/dev/test.

Why each step:
- ``normalize_text`` makes the transcript the spoken form the voice actually says, the same form
  scoring uses.
- Exact duplicates after normalization ("Amen." / "amen!") and near duplicates (Bible parallels
  that differ by a word) would leak test text into training, so both are removed *before*
  splitting, with MinHash over word 3-shingles and LSH banding (the usual web-corpus recipe).
- Splits are assigned by a seeded hash of the normalized sentence, so a sentence lands in the
  same split whatever else is in the pool, and no sentence can be in two splits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edgeasr.text import is_speakable, normalize_text

from .text_sources import MissingSourceError, iter_source

__all__ = ["SentenceConfig", "Sentence", "SentencePool", "collect_sentences", "NearDupIndex"]

log = logging.getLogger(__name__)

_PRIME = (1 << 61) - 1


@dataclass(frozen=True)
class SentenceConfig:
    """What text to collect and how to split it."""

    sources: tuple[str, ...] = ("bible", "wordnet", "fortunes", "man", "debian")
    ood_source: str = "debian"  # kept out of train/dev/test entirely: the test_ood split
    per_source_limit: int | None = None  # raw sentences read per source (None: all)
    min_words: int = 2
    max_words: int = 30
    dev_fraction: float = 0.02
    test_fraction: float = 0.02
    near_dup_threshold: float = 0.7  # Jaccard similarity of word 3-shingles
    required_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.ood_source and self.ood_source not in self.sources:
            raise ValueError(f"ood_source {self.ood_source!r} is not one of sources {self.sources}")
        if not 0 <= self.dev_fraction + self.test_fraction < 1:
            raise ValueError("dev_fraction + test_fraction must be in [0, 1)")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"bad word-length range [{self.min_words}, {self.max_words}]")


@dataclass(frozen=True)
class Sentence:
    """A normalized sentence and where it came from."""

    text: str
    source: str
    split: str  # train | dev | test | test_ood


@dataclass
class SentencePool:
    """The sentences per split plus the bookkeeping summary.json reports."""

    splits: dict[str, list[Sentence]]
    raw_counts: dict[str, int] = field(default_factory=dict)
    kept_counts: dict[str, int] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # source -> install command
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count


def _shingle_hashes(words: list[str], k: int = 3) -> np.ndarray:
    grams = [" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))]
    return np.array(
        [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") >> 3
         for g in grams],
        dtype=np.uint64,
    )


class NearDupIndex:
    """MinHash-LSH index over word shingles: ``add(words)`` says whether a near copy exists.

    Candidates from the LSH bands are confirmed with the exact shingle Jaccard similarity, so a
    false band collision never drops a sentence.
    """

    def __init__(self, threshold: float, num_perm: int = 32, bands: int = 8, seed: int = 1) -> None:
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64)
        self.threshold = threshold
        self.bands = bands
        self.rows = num_perm // bands
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self.shingles: list[frozenset[int]] = []

    def _signature(self, hashes: np.ndarray) -> np.ndarray:
        # (a*x + b) mod p on 32-bit halves keeps the product inside uint64.
        x = (hashes & np.uint64(0xFFFFFFFF))[:, None]
        return ((self.a[None, :] * x + self.b[None, :]) % np.uint64(_PRIME)).min(axis=0)

    def add(self, words: list[str]) -> bool:
        """Index ``words``; return True (and do not index) if a near duplicate is present."""
        hashes = _shingle_hashes(words)
        shingles = frozenset(int(h) for h in hashes)
        sig = self._signature(hashes)
        keys = [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]
        seen: set[int] = set()
        for band, key in enumerate(keys):
            for j in self.buckets[band].get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self.shingles[j]
                if len(shingles & other) / len(shingles | other) >= self.threshold:
                    return True
        idx = len(self.shingles)
        self.shingles.append(shingles)
        for band, key in enumerate(keys):
            self.buckets[band].setdefault(key, []).append(idx)
        return False


def _split_of(text: str, seed: int, cfg: SentenceConfig) -> str:
    h = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "little") / 2**64
    if u < cfg.dev_fraction:
        return "dev"
    if u < cfg.dev_fraction + cfg.test_fraction:
        return "test"
    return "train"


def collect_sentences(cfg: SentenceConfig, seed: int) -> SentencePool:
    """Read every source, normalize, filter, deduplicate and split.

    Missing sources are recorded with their install command and skipped, unless listed in
    ``cfg.required_sources``.  Each split's list is shuffled deterministically by ``seed``.
    """
    splits: dict[str, list[Sentence]] = {"train": [], "dev": [], "test": [], "test_ood": []}
    pool = SentencePool(splits=splits)
    exact: set[str] = set()
    near = NearDupIndex(cfg.near_dup_threshold)
    drop = pool.dropped
    # The OOD source goes first, so a sentence it shares with an in-domain source is OOD only
    # and the in-domain copy is dropped as a duplicate.
    order = sorted(cfg.sources, key=lambda s: s != cfg.ood_source)
    for name in order:
        try:
            raw: Iterable[str] = list(iter_source(name, cfg.per_source_limit))
        except MissingSourceError as e:
            if name in cfg.required_sources:
                raise
            log.warning("%s", e)
            pool.missing[name] = e.install
            continue
        n_raw = n_kept = 0
        for r in raw:
            n_raw += 1
            if not is_speakable(r):
                drop["unspeakable"] = drop.get("unspeakable", 0) + 1
                continue
            text = normalize_text(r)
            words = text.split()
            if not cfg.min_words <= len(words) <= cfg.max_words:
                drop["length"] = drop.get("length", 0) + 1
                continue
            if text in exact:
                drop["duplicate"] = drop.get("duplicate", 0) + 1
                continue
            exact.add(text)
            if near.add(words):
                drop["near_duplicate"] = drop.get("near_duplicate", 0) + 1
                continue
            split = "test_ood" if name == cfg.ood_source else _split_of(text, seed, cfg)
            splits[split].append(Sentence(text, name, split))
            n_kept += 1
        pool.raw_counts[name] = n_raw
        pool.kept_counts[name] = n_kept
    for i, name in enumerate(sorted(splits)):
        order_idx = np.random.default_rng([seed, 7, i]).permutation(len(splits[name]))
        splits[name] = [splits[name][j] for j in order_idx]
    return pool
