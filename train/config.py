"""Typed training configuration, loaded from TOML.

A training run is described by one TOML file (see ``train/configs/default.toml``), or by a
file of changes to another one (``base = "default.toml"``, see :func:`read_config`); the file is
parsed into the dataclasses below, checked by :meth:`TrainConfig.validate`, and stored resolved
(as a dict) in every checkpoint so that a run can be resumed or audited without the files.

The ``[model]`` and ``[features]`` tables are kept as plain dicts here: their schemas belong to
:mod:`edgeasr.train.model` (``ModelConfig``) and :mod:`edgeasr.features` (``FeatureConfig``),
which validate them when the model and feature extractor are built. Keeping them opaque avoids
two definitions of the same fields drifting apart.

Paths are used as written (relative ones relative to the working directory), as in most
training tools; ``--set section.key=value`` overrides from the command line are applied
before validation so they are checked like values from the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeasr.errors import EdgeAsrError

__all__ = [
    "ConfigError",
    "DataConfig",
    "LoopConfig",
    "ManifestSpec",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "read_config",
]


class ConfigError(EdgeAsrError, ValueError):
    """A configuration value is missing, of the wrong type or out of range (message says which)."""


@dataclass
class ManifestSpec:
    """One JSONL manifest and how strongly it is sampled.

    ``repeat`` scales how often each utterance appears per epoch: 3.0 means three times, 0.5
    means a random half (a different half every epoch). This is how a small real-speech set is
    up-weighted against a large synthetic corpus without copying files.

    ``exclude_text_of`` lists manifests (test or dev sets) whose sentences must not be trained
    on: a row of ``manifest`` whose normalized transcript is one of theirs is dropped (and
    counted in the log). Why: an extra corpus built from the same text source as the test
    sets (e.g. the Bible side of the speech-translation corpus) may contain test sentences.

    ``speeds`` is speed perturbation as in Kaldi and icefall: each utterance appears once per
    factor, resampled so that it plays that much faster (0.9 = 10 % slower and lower). Why: a
    corpus of few voices gains new pitches, formants and speaking rates for free; a factor
    list, not a random draw, keeps every epoch (and an exact resume) deterministic.
    """

    manifest: str
    repeat: float = 1.0
    name: str = ""
    exclude_text_of: list[str] = field(default_factory=list)
    speeds: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        if not self.name:
            self.name = Path(self.manifest).stem


@dataclass
class DataConfig:
    """Where the data comes from and how it is batched."""

    train: list[ManifestSpec] = field(default_factory=list)
    valid: list[ManifestSpec] = field(default_factory=list)
    #: Batch budget in seconds of *padded* audio (batch size x longest utterance).
    max_duration: float = 200.0
    #: Number of duration buckets; utterances are batched only with others of their bucket.
    num_buckets: int = 8
    #: DataLoader worker processes decoding audio and computing features (0 = in the main one).
    num_workers: int = 1
    #: Utterances outside [min_duration, max_utt_duration] seconds are dropped when loading.
    min_duration: float = 0.2
    max_utt_duration: float = 30.0
    #: Validation uses at most this many utterances per validation set (0 = all).
    valid_max_utts: int = 0


@dataclass
class OptimConfig:
    """AdamW with linear warmup followed by Noam (inverse square root) or cosine decay."""

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 1e-2
    warmup_steps: int = 1000
    schedule: Literal["noam", "cosine", "constant"] = "noam"
    #: Cosine decays to ``lr * min_lr_ratio`` at ``total_steps`` (0 = derive from the loop limits).
    total_steps: int = 0
    min_lr_ratio: float = 0.05
    #: Gradient norm clipping threshold (0 disables clipping).
    grad_clip: float = 5.0


@dataclass
class LoopConfig:
    """Length of training, precision, logging, validation and checkpoint cadence."""

    max_epochs: int = 30
    #: Stop after this many optimizer steps (0 = no limit).
    max_steps: int = 0
    #: Mixed precision on CUDA ("bf16" or "fp16"); ignored on CPU, where training is fp32.
    amp: Literal["none", "bf16", "fp16"] = "bf16"
    log_every: int = 20
    #: Validate every N steps (0 = only at epoch end).
    valid_every_steps: int = 0
    #: Save a checkpoint every N minutes of wall time and/or every N steps (0 = off).
    checkpoint_every_minutes: float = 10.0
    checkpoint_every_steps: int = 0
    #: Number of step checkpoints kept (epoch-end checkpoints are always kept).
    keep_last: int = 3
    #: torch intra-op threads per process (0 = leave torch's default).
    threads: int = 0
    #: Utterances read for the global CMVN statistics before training (0 = no CMVN).
    cmvn_utts: int = 500


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in each checkpoint as ``train_config``."""

    tokenizer: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    #: Keyword arguments of ``edgeasr.train.model.ModelConfig`` (vocab_size filled from tokenizer).
    model: dict[str, Any] = field(default_factory=dict)
    #: Keyword arguments of ``edgeasr.features.FeatureConfig``.
    features: dict[str, Any] = field(default_factory=dict)
    #: Knowledge distillation (``edgeasr.train.model.interaed.KDConfig``); empty = off. Opaque
    #: here like ``model``: validated when the KD decoders are built (docs/interaed-kd.md).
    kd: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Check ranges and consistency; raise :class:`ConfigError` naming the bad field."""
        d, o, lp = self.data, self.optim, self.loop
        if not self.tokenizer:
            raise ConfigError("tokenizer: path of the sentencepiece .model file is required")
        if not d.train:
            raise ConfigError("data.train: at least one training manifest is required")
        for where, specs in (("data.train", d.train), ("data.valid", d.valid)):
            for i, s in enumerate(specs):
                if not s.manifest:
                    raise ConfigError(f"{where}[{i}].manifest is empty")
                if not s.repeat > 0:
                    raise ConfigError(f"{where}[{i}].repeat must be > 0, got {s.repeat}")
                if (not s.speeds or len(set(s.speeds)) != len(s.speeds)
                        or not all(0.5 <= f <= 2.0 for f in s.speeds)):
                    raise ConfigError(f"{where}[{i}].speeds must be distinct factors in "
                                      f"[0.5, 2.0], got {s.speeds}")
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ConfigError(f"{where}: manifest names must be unique, got {names}")
        _positive("data.max_duration", d.max_duration)
        _positive("data.num_buckets", d.num_buckets)
        _non_negative("data.num_workers", d.num_workers)
        _non_negative("data.min_duration", d.min_duration)
        if d.max_utt_duration <= d.min_duration:
            raise ConfigError("data.max_utt_duration must be greater than data.min_duration")
        if d.max_utt_duration > d.max_duration:
            raise ConfigError(
                f"data.max_utt_duration ({d.max_utt_duration}) exceeds data.max_duration "
                f"({d.max_duration}): such an utterance could never fit in a batch"
            )
        _non_negative("data.valid_max_utts", d.valid_max_utts)
        _positive("optim.lr", o.lr)
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        _non_negative("optim.weight_decay", o.weight_decay)
        _non_negative("optim.warmup_steps", o.warmup_steps)
        if o.schedule not in ("noam", "cosine", "constant"):
            raise ConfigError(
                f"optim.schedule must be noam, cosine or constant, got {o.schedule!r}"
            )
        if not 0 <= o.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        _non_negative("optim.total_steps", o.total_steps)
        _non_negative("optim.grad_clip", o.grad_clip)
        _positive("loop.max_epochs", lp.max_epochs)
        _non_negative("loop.max_steps", lp.max_steps)
        if lp.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"loop.amp must be none, bf16 or fp16, got {lp.amp!r}")
        _positive("loop.log_every", lp.log_every)
        _non_negative("loop.valid_every_steps", lp.valid_every_steps)
        _non_negative("loop.checkpoint_every_minutes", lp.checkpoint_every_minutes)
        _non_negative("loop.checkpoint_every_steps", lp.checkpoint_every_steps)
        _positive("loop.keep_last", lp.keep_last)
        _non_negative("loop.threads", lp.threads)
        _non_negative("loop.cmvn_utts", lp.cmvn_utts)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) safe for ``torch.load(weights_only=True)``."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build from a parsed TOML / checkpoint dict; unknown keys are an error (typos)."""
        raw = dict(raw)
        data = dict(raw.pop("data", {}))
        for key in ("train", "valid"):
            if key in data:
                data[key] = [_build(ManifestSpec, s, f"data.{key}[{i}]")
                             for i, s in enumerate(data[key])]
        optim = dict(raw.pop("optim", {}))
        if "betas" in optim:
            optim["betas"] = tuple(optim["betas"])
        return _build(
            cls,
            {
                **raw,
                "data": _build(DataConfig, data, "data"),
                "optim": _build(OptimConfig, optim, "optim"),
                "loop": _build(LoopConfig, raw.pop("loop", {}), "loop"),
            },
            "",
        )


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML config, apply ``section.key=value`` overrides, validate and return it."""
    return TrainConfig.from_dict(read_config(path, overrides)).validate()


def read_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The TOML of a config file as a dict, its ``base`` resolved and ``section.key=value``
    overrides applied, not yet validated: a command whose config adds tables to the fit config
    (``edgeasr-train st``'s ``[st]``) takes them out of it before :meth:`TrainConfig.from_dict`
    sees the rest.

    ``base = "other.toml"`` (a path relative to this file) makes the file a set of changes to
    another config, as a later training stage is of the one before it: tables merge key by key,
    every other value (numbers, strings, arrays such as ``data.train``) replaces the base's.
    Why: a stage config that copies its base drifts from it (a warm start needs the same
    ``[model]`` and ``[features]``), and its reader cannot see what the stage changed."""
    raw = _read_with_base(Path(path), ())
    apply_overrides(raw, overrides or [])
    return raw


def _read_with_base(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """``path``'s TOML merged over its base's (recursively); ``chain`` catches cycles."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        where = f" (the base of {chain[-1]})" if chain else ""
        raise ConfigError(f"{path}: config file not found{where}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be the path of another config, got {base!r}")
    base_path = (path.parent / base).resolve()
    seen = (*chain, path.resolve())
    if base_path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, base_path))
        raise ConfigError(f"{path}: configs name each other as base ({cycle})")
    return _merge(_read_with_base(base_path, seen), raw)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: tables merged recursively, other values replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``a.b.c=value`` strings in place; ``value`` is parsed as a TOML value
    (``3``, ``1e-3``, ``"text"``, ``[1, 2]``, ``true``) and taken as a bare string otherwise."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *parents, leaf = key.strip().split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a table")
        node[leaf] = value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}")
    return cls(**values)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
