"""HENT-SRT stage 2: multitask ASR + ST fine-tuning (``edgeasr-train st CONFIG.toml ...``).

Two-stage training, as in the paper:

1. ASR pre-training is an ordinary ``edgeasr-train fit`` run
   (``train/configs/hent_srt_stage1.toml``): its ``Transducer`` checkpoint is the ASR half of
   the hierarchical model.
2. This driver (``train/configs/hent_srt_stage2.toml``) builds a :class:`HierarchicalTransducer`,
   loads the stage-1 weights into ``model.asr`` (``[st] init``), and trains everything on
   parallel data (manifests with a ``translation`` field) with the joint objective.

The loop is :class:`edgeasr.train.fit.Trainer`'s (epochs, dynamic buckets, DDP, AMP, exact
resume, checkpoints, curves): :class:`StTrainer` only swaps the model, the dataset (adds the
target-language token ids) and the validation (greedy translation BLEU/chrF next to WER).

Config: the fit TOML plus an ``[st]`` table (``tokenizer``: target-language sentencepiece model,
``init``: stage-1 checkpoint or "", ``valid_blank_penalty``) and ``[st.model]`` with
:class:`~edgeasr.train.model.hierarchical.StHeadConfig` fields (``vocab_size`` is filled from
the ST tokenizer).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from edgeasr.features import FeatureConfig
from edgeasr.manifest import read_manifest
from edgeasr.metrics import wer
from edgeasr.tokenizer import Tokenizer

from .checkpoint import latest_checkpoint, load_checkpoint
from .config import ConfigError, ManifestSpec, TrainConfig, read_config
from .data import AsrDataset, Batch, Example, global_cmvn, sampler_for
from .fit import Trainer, _autocast, _seed_everything, _setup_logging, setup_distributed
from .fit import add_arguments as fit_arguments
from .model import greedy_decode
from .model.hierarchical import HierarchicalConfig, HierarchicalTransducer, st_greedy_decode

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
                 max_duration: float = float("inf"), max_utts: int = 0) -> None:
        super().__init__(specs, tokenizer, feature_config, min_duration, max_duration, max_utts)
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


def collate_st(examples: list[StExample | None]) -> StBatch | None:
    from .data import collate

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


def make_st_loader(dataset: ParallelDataset, sampler: Any, num_workers: int = 0) -> DataLoader:
    """As :func:`edgeasr.train.data.make_loader` (private generator for exact resume)."""
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_st,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      prefetch_factor=2 if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(sampler.seed))


class StTrainer(Trainer):
    """:class:`Trainer` over a :class:`HierarchicalTransducer` and parallel data."""

    def __init__(self, config: TrainConfig, st: StOptions, exp_dir: str | Path,
                 resume: bool = False) -> None:
        self.cfg, self.st_options = config, st
        self.exp_dir = Path(exp_dir)
        self.dist = setup_distributed()
        if self.dist.distributed:
            raise ValueError("edgeasr-train st runs in one process (DDP: use fit's recipe)")
        if config.loop.threads:
            torch.set_num_threads(config.loop.threads)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        _setup_logging(self.exp_dir / "train.log")
        ckpt_path = latest_checkpoint(self.exp_dir) if resume else None
        ckpt = load_checkpoint(ckpt_path) if ckpt_path else None

        if ckpt is not None:
            self.tokenizer = Tokenizer.from_bytes(ckpt["tokenizer"], str(ckpt_path))
            self.st_tokenizer = Tokenizer.from_bytes(ckpt["st_tokenizer"], str(ckpt_path))
        else:
            self.tokenizer = Tokenizer(config.tokenizer)
            self.st_tokenizer = Tokenizer(st.tokenizer)
        for src, name in ((config.tokenizer, "tokenizer.model"),
                          (st.tokenizer, "st_tokenizer.model")):
            if ckpt is None and Path(src).resolve() != (self.exp_dir / name).resolve():
                shutil.copyfile(src, self.exp_dir / name)
        asr = {"vocab_size": self.tokenizer.vocab_size, **config.model}
        head = {"vocab_size": self.st_tokenizer.vocab_size, **st.model}
        self.model_config = HierarchicalConfig.from_dict({"asr": asr, "st": head})
        if self.model_config.asr.vocab_size != self.tokenizer.vocab_size or \
                self.model_config.st.vocab_size != self.st_tokenizer.vocab_size:
            raise ValueError("model vocab sizes differ from the tokenizers' "
                             f"({self.tokenizer.vocab_size}, {self.st_tokenizer.vocab_size})")
        self.feature_config = FeatureConfig.from_dict(config.features)
        _seed_everything(config.seed)
        self.model = HierarchicalTransducer(self.model_config)
        if ckpt is None and st.init:
            stage1 = load_checkpoint(st.init)
            if stage1["model_config"] != self.model_config.asr.to_dict():
                raise ValueError(f"{st.init}: stage-1 model config differs from [model]")
            self.model.asr.load_state_dict(stage1["model"])
            log.info("ASR half initialized from stage-1 checkpoint %s", st.init)
        self.model.to(self.dist.device)
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr,
                                           betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        cuda = self.dist.device.type == "cuda"
        self.amp_dtype = ({"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.loop.amp)
                          if cuda else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        d = config.data
        self.train_set = ParallelDataset(d.train, self.tokenizer, self.st_tokenizer,
                                         self.feature_config, d.min_duration, d.max_utt_duration)
        self.valid_sets = {
            s.name: ParallelDataset([s], self.tokenizer, self.st_tokenizer, self.feature_config,
                                    d.min_duration, d.max_utt_duration, d.valid_max_utts)
            for s in d.valid
        }
        self.sampler = sampler_for(self.train_set, d.max_duration, d.num_buckets, config.seed)
        self.loader = make_st_loader(self.train_set, self.sampler, d.num_workers)
        self.step = self.epoch = self.batches_done = 0
        self.resumed_mid_epoch = False
        if ckpt is not None:
            self._restore(ckpt)
        elif not st.init and config.loop.cmvn_utts > 0:
            mean, std = global_cmvn(self.train_set, config.loop.cmvn_utts, seed=config.seed)
            self.model.asr.encoder.cmvn.set_stats(torch.from_numpy(mean),
                                                  torch.from_numpy(std))
        self.ddp = self.model
        self.total_steps = o.total_steps or (
            config.loop.max_steps or config.loop.max_epochs * len(self.sampler))
        log.info("HENT-SRT: %.2f M parameters; %d parallel utterances (%.2f h)",
                 sum(p.numel() for p in self.model.parameters()) / 1e6, len(self.train_set),
                 self.train_set.total_hours)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["st_tokenizer"] = self.st_tokenizer.model_bytes
        state["st_options"] = {"tokenizer": self.st_options.tokenizer,
                               "init": self.st_options.init,
                               "valid_blank_penalty": self.st_options.valid_blank_penalty,
                               "model": dict(self.st_options.model)}
        return state

    def train_step(self, batch: StBatch) -> dict[str, float]:  # type: ignore[override]
        from .fit import learning_rate

        lr = learning_rate(self.step, self.cfg.optim, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        b = batch.to(self.dist.device)
        with _autocast(self.dist.device, self.amp_dtype):
            out = self.model(b.features, b.feature_lens, b.targets, b.target_lens,
                             b.st_targets, b.st_target_lens)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return {"loss": float(out.loss.detach()), "lr": lr, "grad_norm": grad_norm,
                "parts": {k: float(v) for k, v in out.parts.items()}}

    def _validate_set(self, name: str, ds: ParallelDataset) -> dict[str, Any]:  # type: ignore[override]
        sampler = sampler_for(ds, self.cfg.data.max_duration, self.cfg.data.num_buckets,
                              seed=0, shuffle=False)
        total, n, refs, hyps, st_refs, st_hyps = 0.0, 0, [], [], [], []
        for batch in make_st_loader(ds, sampler, 0):
            if batch is None:
                continue
            b = batch.to(self.dist.device)
            out = self.model(b.features, b.feature_lens, b.targets, b.target_lens,
                             b.st_targets, b.st_target_lens)
            total += float(out.loss) * len(b)
            n += len(b)
            hyps += [self.tokenizer.decode(i)
                     for i in greedy_decode(self.model.asr, b.features, b.feature_lens)]
            st_hyps += [self.st_tokenizer.decode(i) for i in st_greedy_decode(
                self.model, b.features, b.feature_lens,
                blank_penalty=self.st_options.valid_blank_penalty)]
            refs += b.texts
            st_refs += b.translations
        result = {"kind": "valid", "set": name, "step": self.step, "epoch": self.epoch,
                  "loss": total / max(1, n), "wer": wer(refs, hyps).rate, "utts": n,
                  **translation_scores(st_refs, st_hyps),
                  "examples": [{"ref": r, "hyp": h, "translation_ref": tr, "translation": th}
                               for r, h, tr, th in zip(refs[:3], hyps[:3], st_refs[:3],
                                                       st_hyps[:3], strict=True)]}
        self._log(result)
        return result


def translation_scores(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu) plus the hypothesis/reference length ratio, the number
    the ST blank penalty is tuned on (HENT-SRT fig. 3)."""
    import sacrebleu

    ratio = sum(len(h.split()) for h in hyps) / max(1, sum(len(r.split()) for r in refs))
    return {"bleu": float(sacrebleu.corpus_bleu(hyps, [refs]).score),
            "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score),
            "length_ratio": float(np.round(ratio, 4))}


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
    """``fit``'s options (config, ``--exp-dir``, ``--resume``, ``--set``): stage 2 is a fit run
    with another model, so its command line is fit's, only the config has an ``[st]`` table."""
    fit_arguments(parser)
    parser.description = ("CONFIG: a fit config plus an [st] table (tokenizer, init, "
                          "valid_blank_penalty, [st.model]); --set overrides its keys too, "
                          "e.g. --set st.init=stage1.pt")


def run(args: argparse.Namespace) -> int:
    config, st = load_st_config(args.config, args.overrides)
    StTrainer(config, st, args.exp_dir, resume=args.resume).train()
    return 0
