"""HENT-SRT stage 2: multitask ASR + ST fine-tuning (``edgeasr-train st CONFIG.toml ...``).

Two-stage training, as in the paper:

1. ASR pre-training is an ordinary ``edgeasr-train fit`` run
   (``train/configs/hent_srt_stage1.toml``): its ``Transducer`` checkpoint is the ASR half of
   the hierarchical model.
2. This driver (``train/configs/hent_srt_stage2.toml``) builds a :class:`HierarchicalTransducer`,
   loads the stage-1 weights into ``model.asr`` (``[st] init``), and trains everything on
   parallel data (manifests with a ``translation`` field) with the joint objective.

The loop is :class:`edgeasr.train.fit.Trainer`'s (epochs, dynamic buckets, AMP, exact resume,
checkpoints, curves; one process): :class:`StTrainer` overrides only its hooks for the model,
the dataset (adds the target-language token ids, batched by
:meth:`ParallelDataset.collate_batch`), the loss call and the validation (greedy translation
BLEU/chrF next to WER). With ``[st] init`` the ASR tokenizer is the stage-1 checkpoint's.

Config: the fit TOML plus an ``[st]`` table (``tokenizer``: target-language sentencepiece model,
``init``: stage-1 checkpoint or "", ``valid_blank_penalty``) and ``[st.model]`` with
:class:`~edgeasr.train.model.hierarchical.StHeadConfig` fields (``vocab_size`` is filled from
the ST tokenizer).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeasr.features import FeatureConfig
from edgeasr.manifest import read_manifest
from edgeasr.metrics import translation_scores
from edgeasr.tokenizer import Tokenizer

from .checkpoint import load_checkpoint
from .config import ConfigError, ManifestSpec, TrainConfig, read_config
from .data import ENCODER_FRAME_RATE, AsrDataset, Batch, Example, collate
from .fit import Trainer
from .fit import add_arguments as fit_arguments
from .model import LossOutput, Transducer
from .model.hierarchical import HierarchicalConfig, HierarchicalTransducer, st_greedy_decode
from .warm_start import require_same_features, warm_start_state

__all__ = ["ParallelDataset", "StBatch", "StOptions", "StTrainer", "load_st_config",
           "normalize_translation"]

log = logging.getLogger("edgeasr.train.st")


@dataclass
class StOptions:
    """The ``[st]`` table: target tokenizer, stage-1 init, ST head shape, validation decoding."""

    tokenizer: str = ""
    init: str = ""
    valid_blank_penalty: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)


def load_st_config(path: str | Path, overrides: list[str] | None = None
                   ) -> tuple[TrainConfig, StOptions]:
    """Read a stage-2 TOML: the ``[st]`` table is split off, the rest is a fit config."""
    raw = read_config(path, overrides)
    st_raw = raw.pop("st", None)
    if not isinstance(st_raw, dict):
        raise ConfigError(f"{path}: an [st] table (tokenizer, init, [st.model]) is required")
    unknown = sorted(set(st_raw) - {"tokenizer", "init", "valid_blank_penalty", "model"})
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join('st.' + k for k in unknown)}")
    st = StOptions(**st_raw)
    if not st.tokenizer:
        raise ConfigError("st.tokenizer: the target-language sentencepiece model is required")
    return TrainConfig.from_dict(raw).validate(), st


def normalize_translation(text: str) -> str:
    """Target-side training text: the parallel-corpus normalization (lower case, spoken
    punctuation removed) so that a tokenizer trained on ``text/*.es.txt`` covers it."""
    from .corpus.parallel import normalize_spanish

    return normalize_spanish(text)


@dataclass
class StExample(Example):
    translation: str = ""
    st_tokens: tuple[int, ...] = ()


@dataclass
class StBatch(Batch):
    """A :class:`Batch` plus padded target-language token ids."""

    translations: list[str] = field(default_factory=list)
    st_targets: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    st_target_lens: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def to(self, device: torch.device | str) -> StBatch:
        b = super().to(device)
        return StBatch(b.ids, b.texts, b.features, b.feature_lens, b.targets, b.target_lens,
                       self.translations, self.st_targets.to(device),
                       self.st_target_lens.to(device))


class ParallelDataset(AsrDataset):
    """:class:`AsrDataset` whose utterances also carry a tokenized ``translation``; utterances
    without one (or whose translation tokenizes to nothing) are dropped, with a count logged."""

    def __init__(self, specs: list[ManifestSpec], tokenizer: Tokenizer, st_tokenizer: Tokenizer,
                 feature_config: FeatureConfig | None = None, min_duration: float = 0.0,
                 max_duration: float = float("inf"), max_utts: int = 0,
                 frame_rate: float = ENCODER_FRAME_RATE) -> None:
        super().__init__(specs, tokenizer, feature_config, min_duration, max_duration, max_utts,
                         frame_rate)
        trans: dict[str, str] = {}
        for spec in specs:
            for cut in read_manifest(spec.manifest):
                if cut.translation:
                    trans[str(cut.id)] = normalize_translation(cut.translation)
        keep_u, keep_r, self.translations, self.st_tokens = [], [], [], []
        for u, r in zip(self.utterances, self.repeats, strict=True):
            t = trans.get(u.id, "")
            ids = tuple(st_tokenizer.encode(t)) if t else ()
            if ids:
                keep_u.append(u)
                keep_r.append(r)
                self.translations.append(t)
                self.st_tokens.append(ids)
        if not keep_u:
            raise ValueError(f"no utterance with a 'translation' in {[s.manifest for s in specs]}")
        if len(keep_u) < len(self.utterances):
            log.info("dropped %d utterances without a usable translation",
                     len(self.utterances) - len(keep_u))
        self.utterances, self.repeats = keep_u, keep_r

    def __getitem__(self, i: int) -> StExample | None:
        ex = super().__getitem__(i)
        if ex is None:
            return None
        return StExample(ex.id, ex.text, ex.features, ex.tokens, self.translations[i],
                         self.st_tokens[i])

    @staticmethod
    def collate_batch(examples: list[StExample | None]) -> StBatch | None:  # type: ignore[override]
        """:func:`~edgeasr.train.data.collate` plus the padded target-language ids."""
        good = [e for e in examples if e is not None and len(e.features) > 0]
        b = collate(good)  # type: ignore[arg-type]
        if b is None:
            return None
        z = torch.zeros(len(good), max(len(e.st_tokens) for e in good), dtype=torch.int64)
        for k, e in enumerate(good):
            z[k, : len(e.st_tokens)] = torch.tensor(e.st_tokens)
        return StBatch(b.ids, b.texts, b.features, b.feature_lens, b.targets, b.target_lens,
                       [e.translation for e in good], z,
                       torch.tensor([len(e.st_tokens) for e in good], dtype=torch.int64))


class StTrainer(Trainer):
    """:class:`Trainer` over a :class:`HierarchicalTransducer` and parallel data: the stage-1
    checkpoint (``[st] init``) starts the ASR half, and validation adds greedy translation
    BLEU/chrF to the ASR WER."""

    supports_ddp = False  # stage 2 has only ever run (and been tested) in one process

    def __init__(self, config: TrainConfig, st: StOptions, exp_dir: str | Path,
                 resume: bool = False) -> None:
        self.st_options = st
        super().__init__(config, exp_dir, resume, init=st.init)

    def load_tokenizers(self, ckpt: dict[str, Any] | None, init: dict[str, Any] | None) -> None:
        """The ASR tokenizer (stage 1's when initialized from it) and the target-language one
        (``[st] tokenizer``; a stage-1 checkpoint has none)."""
        super().load_tokenizers(ckpt, init)
        self.st_tokenizer = self._keep_tokenizer(ckpt, "st_tokenizer", self.st_options.tokenizer)

    def make_model_config(self) -> HierarchicalConfig:
        """``[model]`` for the ASR half, ``[st.model]`` for the ST head, each with its own
        tokenizer's vocabulary size."""
        asr = {"vocab_size": self.tokenizer.vocab_size, **self.cfg.model}
        head = {"vocab_size": self.st_tokenizer.vocab_size, **self.st_options.model}
        config = HierarchicalConfig.from_dict({"asr": asr, "st": head})
        if config.asr.vocab_size != self.tokenizer.vocab_size or \
                config.st.vocab_size != self.st_tokenizer.vocab_size:
            raise ConfigError("model vocab sizes differ from the tokenizers' "
                              f"({self.tokenizer.vocab_size}, {self.st_tokenizer.vocab_size})")
        return config

    def build_model(self, ckpt: dict[str, Any] | None, init: dict[str, Any] | None
                    ) -> HierarchicalTransducer:
        """The hierarchical model; a stage-1 ``init`` fills its ASR half."""
        model = HierarchicalTransducer(self.model_config)
        if init is not None:
            require_same_features(init, self.feature_config, self.st_options.init)
            state, notes = warm_start_state(init, model.asr, self.st_options.init)
            model.asr.load_state_dict(state)
            log.info("ASR half initialized from stage-1 checkpoint %s%s", self.st_options.init,
                     "".join(f"; {n}" for n in notes))
        return model

    @property
    def asr_model(self) -> Transducer:
        """The ASR half: the CMVN and the validation WER are its."""
        return self.model.asr

    def make_dataset(self, specs: list[ManifestSpec], max_utts: int = 0) -> ParallelDataset:
        d = self.cfg.data
        return ParallelDataset(specs, self.tokenizer, self.st_tokenizer, self.feature_config,
                               d.min_duration, d.max_utt_duration, max_utts,
                               self.encoder_frame_rate)

    def forward_batch(self, module: nn.Module, batch: StBatch) -> LossOutput:  # type: ignore[override]
        """The multitask loss also takes the target-language ids."""
        return module(batch.features, batch.feature_lens, batch.targets, batch.target_lens,
                      batch.st_targets, batch.st_target_lens)

    def recipe_options(self) -> dict[str, Any]:
        return {"st": dataclasses.asdict(self.st_options)}

    def state_dict(self) -> dict[str, Any]:
        """Fit's checkpoint plus the target tokenizer (export needs it) and the ``[st]``
        options."""
        state = super().state_dict()
        state["st_tokenizer"] = self.st_tokenizer.model_bytes
        state["st_options"] = dataclasses.asdict(self.st_options)
        return state

    def transcribe(self, batch: StBatch) -> dict[str, list[str]]:  # type: ignore[override]
        """ASR ``ref``/``hyp`` plus ``translation_ref``/``translation`` (greedy ST search with
        ``[st] valid_blank_penalty``)."""
        texts = super().transcribe(batch)
        hyps = st_greedy_decode(self.model, batch.features, batch.feature_lens,
                                blank_penalty=self.st_options.valid_blank_penalty)
        return {**texts, "translation_ref": list(batch.translations),
                "translation": [self.st_tokenizer.decode(ids) for ids in hyps]}

    def score(self, texts: dict[str, list[str]]) -> dict[str, float]:
        return {**super().score(texts),
                **translation_scores(texts["translation_ref"], texts["translation"])}


def load_st_model(path: str | Path) -> tuple[HierarchicalTransducer, bytes, bytes, dict[str, Any]]:
    """A stage-2 checkpoint for export: ``(model in eval mode, asr tokenizer bytes,
    st tokenizer bytes, {"feature_config", "train_config"})``."""
    state = load_checkpoint(path)
    if "st_tokenizer" not in state:
        raise ValueError(f"{path}: not an edgeasr-train st checkpoint (no st_tokenizer)")
    model = HierarchicalTransducer(HierarchicalConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model, bytes(state["tokenizer"]), bytes(state["st_tokenizer"]), {
        "feature_config": state["feature_config"], "train_config": state["train_config"]}


# ---------------------------------------------------------------------- CLI
NAME = "st"
HELP = "HENT-SRT stage 2: multitask ASR + speech-translation training on parallel manifests"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fit``'s options (config, ``--exp-dir``, ``--resume``, ``--init``, ``--set``): stage 2 is
    a fit run with another model, so its command line is fit's, only the config has an ``[st]``
    table; ``--init`` is the stage-1 checkpoint (same as ``--set st.init=...``)."""
    fit_arguments(parser)
    parser.description = ("CONFIG: a fit config plus an [st] table (tokenizer, init, "
                          "valid_blank_penalty, [st.model]); --set overrides its keys too, "
                          "e.g. --set st.init=stage1.pt")


def run(args: argparse.Namespace) -> int:
    config, st = load_st_config(args.config, args.overrides)
    if args.init:
        st.init = args.init
    StTrainer(config, st, args.exp_dir, resume=args.resume).train()
    return 0
