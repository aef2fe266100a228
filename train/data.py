"""Training data: manifests -> tokenized utterances -> padded feature batches.

:class:`AsrDataset` reads one or more JSONL manifests (each with its own sampling weight),
normalizes and tokenizes every transcript up front (cheap, and it lets utterances the model
could not learn be dropped before training: empty text, or more tokens than encoder frames,
which CTC cannot align), and computes fbank features lazily in ``__getitem__``, i.e. in the
DataLoader worker processes, with the project's one feature extractor
(:func:`edgeasr.features.compute_features`), so training sees exactly the runtime features.

An unreadable audio file does not stop a multi-hour run: ``__getitem__`` logs it once (per
process) and returns ``None``, and :func:`collate` leaves it out of the batch.

Batching is done by :class:`edgeasr.train.sampler.DynamicBucketSampler`;
:func:`make_loader` wires dataset, sampler and the dataset's ``collate_batch`` together.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edgeasr.audio import AudioError, load_audio, resample
from edgeasr.features import FeatureConfig, compute_features
from edgeasr.manifest import read_manifest
from edgeasr.text import normalize_text
from edgeasr.tokenizer import Tokenizer

from .config import ManifestSpec
from .sampler import DynamicBucketSampler

__all__ = [
    "AsrDataset",
    "Batch",
    "Example",
    "Utterance",
    "collate",
    "global_cmvn",
    "make_loader",
    "sampler_for",
]

log = logging.getLogger(__name__)

#: Default encoder frames per second (10 ms features, 4x front end -> 40 ms frames); the
#: trainer passes its model's own rate (12.5 at 8x).
ENCODER_FRAME_RATE = 25.0


@dataclass(frozen=True)
class Utterance:
    """One training utterance, already tokenized; ``audio`` is an absolute path."""

    id: str
    audio: str
    text: str
    tokens: tuple[int, ...]
    duration: float
    offset: float = 0.0
    source: str = ""
    #: Speed perturbation factor (``duration`` is the perturbed length: source length / speed;
    #: ``id`` stays the manifest's, so that recipes can look its row up; examples say ``_spF``).
    speed: float = 1.0


@dataclass
class Example:
    """What ``AsrDataset[i]`` returns: features of one utterance and its token ids."""

    id: str
    text: str
    features: np.ndarray  # [T, num_mel_bins] float32
    tokens: tuple[int, ...]


@dataclass
class Batch:
    """A padded batch. Targets are padded with 0 (the blank id, never a real target)."""

    ids: list[str]
    texts: list[str]
    features: torch.Tensor  # [N, T, F] float32
    feature_lens: torch.Tensor  # [N] int64
    targets: torch.Tensor  # [N, U] int64
    target_lens: torch.Tensor  # [N] int64

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.ids,
            self.texts,
            self.features.to(device, non_blocking=True),
            self.feature_lens.to(device),
            self.targets.to(device),
            self.target_lens.to(device),
        )

    def __len__(self) -> int:
        return len(self.ids)


class AsrDataset(Dataset):
    """Utterances of several manifests; item ``i`` is an :class:`Example` or ``None`` (bad audio).

    Args:
        specs: manifests with their ``repeat`` weights (see :class:`ManifestSpec`).
        tokenizer: project tokenizer; transcripts are normalized with
            :func:`edgeasr.text.normalize_text` first (idempotent on clean text).
        feature_config: the fbank definition (sherpa-onnx defaults).
        min_duration, max_duration: utterances outside this range (seconds) are dropped.
        max_utts: keep only the first N usable utterances of each manifest (0 = all), each
            with all its speed copies (so N rows make N x len(speeds) examples); for
            validation subsets and tests.
        frame_rate: encoder frames per second of the model to train: utterances with more
            tokens than encoder frames are dropped (CTC cannot align them).
    """

    def __init__(
        self,
        specs: list[ManifestSpec],
        tokenizer: Tokenizer,
        feature_config: FeatureConfig | None = None,
        min_duration: float = 0.0,
        max_duration: float = math.inf,
        max_utts: int = 0,
        frame_rate: float = ENCODER_FRAME_RATE,
    ) -> None:
        if not specs:
            raise ValueError("AsrDataset needs at least one manifest")
        self.feature_config = feature_config or FeatureConfig()
        self.utterances: list[Utterance] = []
        self.repeats: list[float] = []
        for spec in specs:
            kept = self._read(spec, tokenizer, min_duration, max_duration, max_utts, frame_rate)
            self.utterances += kept
            self.repeats += [spec.repeat] * len(kept)
        if not self.utterances:
            raise ValueError(f"no usable utterances in {[s.manifest for s in specs]}")
        self._reported: set[str] = set()

    @staticmethod
    def _read(
        spec: ManifestSpec,
        tokenizer: Tokenizer,
        min_duration: float,
        max_duration: float,
        max_utts: int,
        frame_rate: float,
    ) -> list[Utterance]:
        dropped: Counter[str] = Counter()
        kept: list[Utterance] = []
        rows = 0  # manifest rows with at least one copy kept (what max_utts counts)
        excluded = {normalize_text(r.text) for m in spec.exclude_text_of for r in read_manifest(m)}
        for rec in read_manifest(spec.manifest):
            if max_utts and rows >= max_utts:
                break
            speeds = [f for f in spec.speeds
                      if min_duration <= float(rec.duration) / f <= max_duration]
            if len(speeds) < len(spec.speeds):  # counted per copy
                dropped["duration out of range"] += len(spec.speeds) - len(speeds)
            if not speeds:  # before tokenizing: no copy of this row is kept
                continue
            text = normalize_text(rec.text)
            if text in excluded:
                dropped["sentence of an excluded set"] += 1
                continue
            tokens = tuple(tokenizer.encode(text)) if text else ()
            if not tokens:
                dropped["empty transcript"] += 1
                continue
            copies = len(kept)
            for speed in speeds:
                duration = float(rec.duration) / speed
                if len(tokens) > duration * frame_rate:
                    dropped["more tokens than encoder frames"] += 1
                    continue
                kept.append(
                    Utterance(
                        id=str(rec.id),
                        audio=str(rec.audio),
                        text=text,
                        tokens=tokens,
                        duration=duration,
                        offset=float(getattr(rec, "offset", 0.0) or 0.0),
                        source=spec.name,
                        speed=speed,
                    )
                )
            rows += len(kept) > copies
        detail = ", ".join(f"{n} {why}" for why, n in dropped.items())
        log.info(
            "%s: %d utterances (%.2f h) x%.2f%s%s",
            spec.manifest,
            len(kept),
            sum(u.duration for u in kept) / 3600,
            spec.repeat,
            "" if spec.speeds == [1.0] else f", speeds {spec.speeds}",
            f"; dropped {detail}" if detail else "",
        )
        return kept

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def durations(self) -> list[float]:
        return [u.duration for u in self.utterances]

    @property
    def total_hours(self) -> float:
        return sum(self.durations) / 3600

    def load_samples(self, i: int) -> np.ndarray:
        """Decode utterance ``i`` to 16 kHz mono float32 (segment by offset/duration), speed
        perturbed by its factor (the samples, read as if recorded at ``rate * speed``, are
        resampled to ``rate``)."""
        u = self.utterances[i]
        rate = self.feature_config.sample_rate
        x = load_audio(u.audio, rate)
        if u.offset > 0:
            start = int(round(u.offset * rate))
            x = x[start : start + int(round(u.duration * u.speed * rate))]
            if x.size == 0:
                raise AudioError(u.audio, f"segment at offset {u.offset}s is past the end")
        if u.speed != 1.0:
            x = resample(x, int(round(rate * u.speed)), rate)
        return x

    def __getitem__(self, i: int) -> Example | None:
        u = self.utterances[i]
        try:
            feats = compute_features(self.load_samples(i), self.feature_config)
        except (AudioError, ValueError) as e:
            if u.audio not in self._reported:
                self._reported.add(u.audio)
                log.warning("skipping utterance %s: %s", u.id, e)
            return None
        uid = u.id if u.speed == 1.0 else f"{u.id}_sp{u.speed:g}"
        return Example(id=uid, text=u.text, features=feats, tokens=u.tokens)

    @staticmethod
    def collate_batch(examples: list[Example | None]) -> Batch | None:
        """The batch builder :func:`make_loader` uses for this dataset: :func:`collate`. A
        dataset whose examples carry more (e.g. translations) overrides it, so that the
        training loop and validation batch it without knowing the type."""
        return collate(examples)


def collate(examples: list[Example | None]) -> Batch | None:
    """Pad examples into a :class:`Batch`; ``None`` items (bad audio) are left out, and a batch
    with nothing left is ``None`` (the loop skips it)."""
    good = [e for e in examples if e is not None and len(e.features) > 0]
    if not good:
        return None
    n = len(good)
    dim = good[0].features.shape[1]
    t_max = max(len(e.features) for e in good)
    u_max = max(len(e.tokens) for e in good)
    feats = torch.zeros(n, t_max, dim, dtype=torch.float32)
    targets = torch.zeros(n, u_max, dtype=torch.int64)
    for k, e in enumerate(good):
        feats[k, : len(e.features)] = torch.from_numpy(e.features)
        targets[k, : len(e.tokens)] = torch.tensor(e.tokens, dtype=torch.int64)
    return Batch(
        ids=[e.id for e in good],
        texts=[e.text for e in good],
        features=feats,
        feature_lens=torch.tensor([len(e.features) for e in good], dtype=torch.int64),
        targets=targets,
        target_lens=torch.tensor([len(e.tokens) for e in good], dtype=torch.int64),
    )


def make_loader(
    dataset: AsrDataset, sampler: DynamicBucketSampler, num_workers: int = 0
) -> DataLoader:
    """DataLoader over ``dataset`` batched by ``sampler``.

    A private ``torch.Generator`` is passed so that creating the loader iterator does not draw
    from the global torch RNG; otherwise a resumed run (which creates its iterator mid-epoch)
    would see a different RNG stream than an uninterrupted one and not be bit-exact.
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=dataset.collate_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(sampler.seed),
    )


def sampler_for(
    dataset: AsrDataset,
    max_duration: float,
    num_buckets: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
) -> DynamicBucketSampler:
    """The sampler matching ``dataset`` (its durations and per-manifest repeats)."""
    return DynamicBucketSampler(
        dataset.durations,
        max_duration=max_duration,
        num_buckets=num_buckets,
        repeats=dataset.repeats if shuffle else None,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


def global_cmvn(dataset: AsrDataset, num_utts: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of features over ``num_utts`` utterances.

    The utterances are a seeded random subset (not the first N, which in a concatenation of
    manifests would all come from the first one). Statistics are accumulated in float64;
    the std is floored at 1e-5 so a constant dimension cannot blow up the normalization.
    Unreadable utterances are skipped like in training.
    """
    if num_utts < 1:
        raise ValueError(f"num_utts must be >= 1, got {num_utts}")
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(dataset))[:num_utts]
    total = None
    total_sq = None
    frames = 0
    for i in sorted(picked.tolist()):
        ex = dataset[i]
        if ex is None:
            continue
        f = ex.features.astype(np.float64)
        total = f.sum(0) if total is None else total + f.sum(0)
        total_sq = (f * f).sum(0) if total_sq is None else total_sq + (f * f).sum(0)
        frames += len(f)
    if total is None or total_sq is None or frames == 0:
        raise ValueError("global_cmvn: none of the selected utterances could be read")
    mean = total / frames
    var = np.maximum(total_sq / frames - mean * mean, 0.0)
    std = np.maximum(np.sqrt(var), 1e-5)
    return mean.astype(np.float32), std.astype(np.float32)
