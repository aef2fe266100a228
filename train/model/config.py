"""Typed configuration of the transducer model (encoder, predictor, joint, losses, SpecAugment).

The config is the one description of a model's shape: training builds the model from it, export
records it in the bundle's ``model.json`` (``to_dict``), and the torch backend rebuilds the model
from that record (``from_dict``). Every field is therefore a plain JSON value (tuples are written
as lists and read back as tuples).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

BLANK_ID = 0
"""Token id 0 is the blank (sentencepiece ``pad_id``); see docs/architecture.md."""

PAD_LENGTH = 7
"""Extra feature frames a chunk reads beyond its ``subsampling * C`` own frames (sherpa-onnx
``pad_length``): the subsampling front end's right context. They are re-read by the next chunk."""

LOSS_KINDS = ("full", "pruned")


@dataclass
class SpecAugmentConfig:
    """SpecAugment (training only), lhotse/icefall-style.

    Time masks are capped to ``max_time_fraction`` of the utterance in total, so short utterances
    are not wiped out; ``time_warp`` is the maximal warp displacement in frames (0 = off).
    """

    num_freq_masks: int = 2
    max_freq_width: int = 27
    num_time_masks: int = 10
    max_time_width: int = 100
    max_time_fraction: float = 0.15
    time_warp: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        for name in ("num_freq_masks", "max_freq_width", "num_time_masks", "max_time_width",
                     "time_warp"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"SpecAugmentConfig.{name} must be >= 0, got {getattr(self, name)}"
                )
        if not 0.0 <= self.max_time_fraction <= 1.0:
            raise ValueError(
                "SpecAugmentConfig.max_time_fraction must be in [0, 1], "
                f"got {self.max_time_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpecAugmentConfig:
        _check_keys(cls, d)
        cfg = cls(**d)
        cfg.validate()
        return cfg


@dataclass
class ModelConfig:
    """Shape and training options of the cache-aware Conformer transducer.

    Frame counts (``left_context``, chunk sizes) are in *encoder output* frames (40 ms at
    ``subsampling=4``, 80 ms at 8). A streaming chunk of ``C`` output frames reads
    ``subsampling * C + PAD_LENGTH`` feature frames (see :meth:`chunk_input_frames`).
    """

    vocab_size: int = 256
    feature_dim: int = 80
    # front end
    subsampling: int = 4
    subsampling_channels: int = 64
    # encoder
    d_model: int = 192
    num_layers: int = 10
    num_heads: int = 4
    ffn_dim: int = 768
    conv_kernel: int = 15
    left_context: int = 64
    chunk_size: int = 8
    train_chunk_sizes: tuple[int, ...] = (8, 16, 32)
    full_context_prob: float = 0.5
    dropout: float = 0.1
    # predictor / joint
    joint_dim: int = 320
    predictor_dim: int = 256
    context_size: int = 2
    durations: tuple[int, ...] = ()
    # training objectives
    mask_prob: float = 0.5
    iam_ctc_weight: float = 0.3
    loss: str = "full"
    prune_range: int = 5
    simple_loss_scale: float = 0.5
    lm_only_scale: float = 0.25
    am_only_scale: float = 0.0
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)

    # ------------------------------------------------------------------ derived quantities
    @property
    def blank_id(self) -> int:
        return BLANK_ID

    @property
    def pad_length(self) -> int:
        return PAD_LENGTH

    @property
    def is_tdt(self) -> bool:
        """True when the joint has a duration head (TDT / HAINAN); False for plain HAT RNN-T."""
        return len(self.durations) > 0

    def chunk_input_frames(self, chunk_size: int | None = None) -> int:
        """Feature frames one ``forward_chunk`` call reads for ``chunk_size`` output frames."""
        c = self.chunk_size if chunk_size is None else chunk_size
        if c < 1:
            raise ValueError(f"chunk_size must be >= 1, got {c}")
        return self.subsampling * c + PAD_LENGTH

    # ------------------------------------------------------------------ validation / io
    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        positive = ("vocab_size", "feature_dim", "subsampling_channels", "d_model", "num_layers",
                    "num_heads", "ffn_dim", "conv_kernel", "chunk_size", "joint_dim",
                    "predictor_dim", "context_size", "prune_range")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ValueError(f"ModelConfig.vocab_size must count blank plus >= 1 token, "
                             f"got {self.vocab_size}")
        if self.feature_dim < 7:
            raise ValueError(f"ModelConfig.feature_dim must be >= 7 for the 2-stage conv front "
                             f"end, got {self.feature_dim}")
        if self.subsampling not in (4, 8):
            raise ValueError(f"ModelConfig.subsampling must be 4 or 8, got {self.subsampling}")
        if self.d_model % self.num_heads:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if self.left_context < 0:
            raise ValueError(f"ModelConfig.left_context must be >= 0, got {self.left_context}")
        if not self.train_chunk_sizes or any(c < 1 for c in self.train_chunk_sizes):
            raise ValueError(f"ModelConfig.train_chunk_sizes must be non-empty positive ints, "
                             f"got {self.train_chunk_sizes}")
        for name in ("full_context_prob", "mask_prob", "dropout"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"ModelConfig.{name} must be in [0, 1], got {v}")
        for name in ("iam_ctc_weight", "simple_loss_scale", "lm_only_scale", "am_only_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.durations:
            d = list(self.durations)
            if any(x < 0 for x in d) or d != sorted(set(d)) or max(d) < 1:
                raise ValueError(f"ModelConfig.durations must be strictly increasing, >= 0 and "
                                 f"contain a duration >= 1, got {self.durations}")
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"ModelConfig.loss must be one of {LOSS_KINDS}, got {self.loss!r}")
        if self.loss == "pruned" and self.durations:
            raise ValueError("ModelConfig.loss='pruned' supports the RNN-T (HAT) loss only; "
                             "set durations=() or loss='full' for TDT")
        self.specaugment.validate()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["train_chunk_sizes"] = list(self.train_chunk_sizes)
        d["durations"] = list(self.durations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they mean a schema mismatch)."""
        _check_keys(cls, d)
        d = dict(d)
        if "specaugment" in d and not isinstance(d["specaugment"], SpecAugmentConfig):
            d["specaugment"] = SpecAugmentConfig.from_dict(d["specaugment"])
        for name in ("train_chunk_sizes", "durations"):
            if name in d:
                d[name] = tuple(int(x) for x in d[name])
        cfg = cls(**d)
        cfg.validate()
        return cfg


def _check_keys(cls: type, d: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}")


def default_config() -> ModelConfig:
    """:class:`ModelConfig`'s defaults, the issue's reference shape: ~9 M parameters, 40 ms
    frames, 320 ms chunks (C=8), 2.56 s left context. The shipped model is smaller and coarser
    (4.35 M, 80 ms frames: ``train/configs/default.toml``), sized for CPU training."""
    cfg = ModelConfig()
    cfg.validate()
    return cfg


def tiny_config(**overrides: Any) -> ModelConfig:
    """A few-ten-thousand-parameter model for unit tests (runs in milliseconds on CPU)."""
    base: dict[str, Any] = dict(
        vocab_size=16, feature_dim=80, subsampling=4, subsampling_channels=4, d_model=32,
        num_layers=2, num_heads=2, ffn_dim=64, conv_kernel=5, left_context=6, chunk_size=4,
        train_chunk_sizes=(2, 4), joint_dim=32, predictor_dim=32, dropout=0.0,
        specaugment=SpecAugmentConfig(num_time_masks=2, max_time_width=5, max_freq_width=8),
    )
    base.update(overrides)
    cfg = ModelConfig(**base)
    cfg.validate()
    return cfg
