"""Transducer-Llama training recipe: ``edgeasr-train transducer-llama --stage S ...``.

The paper's stages (arXiv 2412.16464, docs/transducer-llama.md), one command, three stages:

``factorized``
    RNN-T (or TDT) training of the :class:`FactorizedTransducer` with the weak stateless LM,
    optionally initialized (``--init``) from a trained HAT checkpoint: its encoder, blank
    predictor and joint, whose label head already is the acoustic (IAM) label model.
``llama``
    Weak-to-strong swap: the vocabulary-adapted Llama (``--lm`` lm.pt from ``edgeasr-train
    lm-adapt``) replaces the weak LM (frozen unless ``--train-lm``) and the model is
    fine-tuned with the same loss (``--init``: a stage-``factorized`` checkpoint).
``mwer``
    MWER fine-tuning on N-best lists from beam search over the factorized model
    (:class:`~edgeasr.train.nbest.MwerObjective`); ``--init`` a stage-``llama`` checkpoint, or
    a stage-``factorized`` one plus ``--lm`` (the paper's swap straight into MWER).

Every stage runs :class:`edgeasr.train.fit.Trainer`'s loop (exact resume with ``--resume``,
checkpoint cadence, validation, curves); :class:`FactorizedTrainer` swaps the model (and, for
MWER, the objective the step calls) and the validation decoding (factorized beam search).
The config is the fit TOML; without one it is the ``--init`` (or resumed) checkpoint's, so
stages 2 and 3 need only ``--set`` overrides (``optim.lr``, ``loop.max_steps``, ...).

Checkpoints: the plain fit format whose ``model`` holds the ASR weights only (loadable as an
ordinary transducer by export, backends and averaging) plus a ``factorized`` entry with the
LM (:func:`~edgeasr.train.model.factorized.lm_record`), the factorized config and the stage
options; :func:`load_factorized` rebuilds the whole model.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeasr.text import normalize_text

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from .config import ConfigError, ManifestSpec, TrainConfig, apply_overrides, load_config
from .data import AsrDataset, Batch
from .fit import Trainer
from .llama.train_lm import load_lm
from .model import ModelConfig
from .model.factorized import FactorizedConfig, FactorizedTransducer, build_lm, lm_record
from .nbest import MwerObjective, decode_nbest
from .warm_start import require_same_features, require_same_network

__all__ = ["STAGES", "FactorizedTrainer", "StageOptions", "load_factorized"]

log = logging.getLogger("edgeasr.train.transducer_llama")

STAGES = ("factorized", "llama", "mwer")


@dataclass
class StageOptions:
    """What a stage adds to the fit config (the command-line options, stored in checkpoints).

    ``lm_weight`` / ``lm_loss_scale``: None keeps the ``--init`` checkpoint's value (else the
    FactorizedConfig default). ``beam``: N-best size of MWER; ``rnnt_weight``: weight of the
    transducer loss added to MWER; ``valid_beam``: beam of the validation WER."""

    stage: str
    init: str = ""
    lm: str = ""
    lm_weight: float | None = None
    lm_loss_scale: float | None = None
    train_lm: bool = False
    beam: int = 4
    rnnt_weight: float = 0.01
    valid_beam: int = 1

    def validate(self) -> StageOptions:
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}; choose from {STAGES}")
        if self.stage == "factorized" and self.lm:
            raise ConfigError("--lm swaps in the Llama: stage llama or mwer, not factorized")
        if self.stage == "llama" and not self.lm:
            raise ConfigError("stage llama needs --lm (the adapted Llama lm.pt)")
        if self.stage != "factorized" and not self.init:
            raise ConfigError(f"stage {self.stage} needs --init (the previous stage's "
                              "checkpoint)")
        if self.beam < 2 and self.stage == "mwer":
            raise ConfigError(f"MWER needs --beam >= 2, got {self.beam}")
        if self.valid_beam < 1:
            raise ConfigError(f"--valid-beam must be >= 1, got {self.valid_beam}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ checkpoints
def _asr_state(model: FactorizedTransducer) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("lm.")}


def _full_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """ASR weights + the LM's under ``lm.``: the factorized model's state dict."""
    lm = state["factorized"]["lm"]["state"]
    return {**state["model"], **{f"lm.{k}": v for k, v in lm.items()}}


def _build(model_config: ModelConfig, entry: dict[str, Any]) -> FactorizedTransducer:
    """The factorized model of a checkpoint entry (weights of the LM loaded, ASR not)."""
    model = FactorizedTransducer(model_config, FactorizedConfig.from_dict(entry["config"]))
    model.swap_lm(build_lm(entry["lm"]), freeze=bool(entry["lm_frozen"]))
    if not entry["lm_frozen"]:
        model.lm.train()
    return model


def load_factorized(path: str | Path) -> tuple[FactorizedTransducer, bytes, dict[str, Any]]:
    """A checkpoint of this recipe for inference: ``(model in eval mode, tokenizer bytes,
    {"model_config", "feature_config", "train_config", "factorized"})``."""
    state = load_checkpoint(path)
    if "factorized" not in state:
        raise CheckpointError(f"{path}: not a factorized (transducer-llama) checkpoint")
    model = _build(ModelConfig.from_dict(state["model_config"]), state["factorized"])
    model.load_state_dict(_full_state(state))
    model.eval()
    configs = {k: state[k] for k in ("model_config", "feature_config", "train_config",
                                     "factorized")}
    return model, bytes(state["tokenizer"]), configs


# ------------------------------------------------------------------------------ the trainer
class FactorizedTrainer(Trainer):
    """:class:`Trainer` over a :class:`FactorizedTransducer` in one of :data:`STAGES`: it
    overrides the model (built from ``--init`` / the resumed checkpoint with the stage's LM),
    the datasets (utterances must fit the LM context), the MWER objective, the checkpoint's
    ``factorized`` entry and the validation decoding (factorized beam search)."""

    supports_ddp = False  # the stages have only ever run (and been tested) in one process

    def __init__(self, config: TrainConfig, opts: StageOptions, exp_dir: str | Path,
                 resume: bool = False) -> None:
        self.opts = opts.validate()
        if config.kd:
            raise ConfigError("[kd] (interAED distillation) is not part of this recipe")
        super().__init__(config, exp_dir, resume, init=opts.init)
        train_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info("transducer-llama stage %s: %s LM (%s), lm_weight %.3g; %.2f M trainable "
                 "parameters", opts.stage, lm_record(self.model.lm)["kind"],
                 "frozen" if self.model.lm_frozen else "trained", self.model.fcfg.lm_weight,
                 train_params / 1e6)

    # -- model ---------------------------------------------------------------------------------
    def build_model(self, ckpt: dict[str, Any] | None, init: dict[str, Any] | None
                    ) -> FactorizedTransducer:
        """The stage's model: from the resumed checkpoint (weights loaded by
        :meth:`load_state_dict`), or the ``--init`` weights with the stage's LM (see the module
        docstring)."""
        if ckpt is not None:
            if "factorized" not in ckpt:
                raise CheckpointError(f"{self.resumed_from}: not a transducer-llama checkpoint")
            return _build(self.model_config, ckpt["factorized"])
        opts = self.opts
        if init is not None:  # same network and features; training-only settings may differ
            require_same_features(init, self.feature_config, opts.init)
            for note in require_same_network(init, self.model_config.to_dict(), opts.init):
                log.info("init %s: %s", opts.init, note)
        prev = (init or {}).get("factorized")
        base = FactorizedConfig.from_dict(prev["config"]) if prev else FactorizedConfig()
        fcfg = FactorizedConfig(
            lm_weight=base.lm_weight if opts.lm_weight is None else opts.lm_weight,
            lm_loss_scale=base.lm_loss_scale if opts.lm_loss_scale is None
            else opts.lm_loss_scale)
        model = FactorizedTransducer(self.model_config, fcfg)
        if init is not None:
            missing, unexpected = model.load_state_dict(init["model"], strict=False)
            if unexpected or any(not k.startswith("lm.") for k in missing):
                raise CheckpointError(f"{opts.init}: weights do not fit the model (missing "
                                      f"{missing[:3]}, unexpected {unexpected[:3]})")
            log.info("ASR weights from %s", opts.init)
        if opts.lm:
            llama, tok, _ = load_lm(opts.lm)
            if tok.pieces() != self.tokenizer.pieces():
                raise ConfigError(f"{opts.lm}: the LM's tokenizer is not the ASR tokenizer; "
                                  "adapt it first (edgeasr-train lm-adapt)")
            model.swap_lm(llama, freeze=not opts.train_lm)
            log.info("swapped in the Llama LM %s", opts.lm)
        elif prev is not None and (opts.stage != "factorized"
                                   or prev["lm"]["kind"] == "stateless"):
            model.swap_lm(build_lm(prev["lm"]), freeze=prev["lm"]["kind"] == "llama"
                          and not opts.train_lm)
        elif opts.stage == "mwer":
            raise ConfigError(f"{opts.init} has no LM: pass --lm (the adapted Llama) for MWER")
        if not model.lm_frozen:
            model.lm.train()
        return model

    def make_dataset(self, specs: list[ManifestSpec], max_utts: int = 0) -> AsrDataset:
        """Fit's dataset without the utterances longer than the LM context (the Llama sees the
        whole history)."""
        ds = super().make_dataset(specs, max_utts)
        limit = getattr(getattr(self.model.lm, "cfg", None), "max_seq_len", None)
        if limit is None:
            return ds
        keep = [i for i, u in enumerate(ds.utterances) if len(u.tokens) < limit]
        if len(keep) < len(ds.utterances):
            log.info("dropped %d utterances with more than %d tokens (the LM context)",
                     len(ds.utterances) - len(keep), limit - 1)
        if not keep:
            raise ConfigError(f"no utterance fits the LM context of {limit} tokens")
        ds.utterances = [ds.utterances[i] for i in keep]
        ds.repeats = [ds.repeats[i] for i in keep]
        return ds

    def objective(self) -> nn.Module:
        """MWER over N-best lists in stage ``mwer``; the model's transducer loss otherwise."""
        if self.opts.stage == "mwer":
            return MwerObjective(self.model, self._words, self.opts.beam, self.opts.rnnt_weight)
        return self.model

    def _words(self, ids: list[int]) -> list[str]:
        return normalize_text(self.tokenizer.decode(ids)).split()

    def recipe_options(self) -> dict[str, Any]:
        return {"stage": self.opts.to_dict()}

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["model"] = _asr_state(self.model)
        state["factorized"] = {"config": self.model.fcfg.to_dict(),
                               "lm": lm_record(self.model.lm),
                               "lm_frozen": self.model.lm_frozen,
                               "stage": self.opts.to_dict()}
        return state

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        super().load_state_dict({**ckpt, "model": _full_state(ckpt)})
        if int(ckpt["epoch"]) > self.epoch:
            # An epoch-end checkpoint stores the finished epoch's sampler position (batch 0 of
            # it), and Trainer.load_state_dict would replay that epoch; start the next one
            # instead. (Checkpoints written since fit stores the loop's epoch never get here.)
            self.epoch, self.batches_done = int(ckpt["epoch"]), 0
            self.resumed_mid_epoch = False

    # -- validation ------------------------------------------------------------------------------
    def transcribe(self, batch: Batch) -> dict[str, list[str]]:
        """``ref`` and the best of the factorized beam search (beam ``valid_beam``; 1 =
        greedy) as ``hyp``."""
        nbest = decode_nbest(self.model, batch.features, batch.feature_lens,
                             self.opts.valid_beam)
        return {"ref": list(batch.texts),
                "hyp": [self.tokenizer.decode(utt[0][0]) for utt in nbest]}


# ---------------------------------------------------------------------------------- CLI
NAME = "transducer-llama"
HELP = "Transducer-Llama stages: factorized (weak LM) -> llama (LM swap) -> mwer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, nargs="?", default=None,
                   help="fit config (TOML); default: the --init or resumed checkpoint's")
    p.add_argument("--stage", choices=STAGES, required=True)
    p.add_argument("--exp-dir", type=Path, required=True, help="output folder of this stage")
    p.add_argument("--init", default="", metavar="CKPT",
                   help="weights to start from: a HAT checkpoint (factorized) or the previous "
                        "stage's checkpoint (llama, mwer)")
    p.add_argument("--lm", default="", metavar="LM.pt",
                   help="the vocabulary-adapted Llama (edgeasr-train lm-adapt) to swap in")
    p.add_argument("--lm-weight", type=float, default=None, metavar="W",
                   help="LM weight in the factorized labels (default: --init's, else 1.0)")
    p.add_argument("--lm-loss-scale", type=float, default=None, metavar="S",
                   help="weight of a trainable LM's own cross-entropy (default: --init's, "
                        "else 0.2)")
    p.add_argument("--train-lm", action="store_true",
                   help="fine-tune the swapped-in Llama too (default: frozen)")
    p.add_argument("--beam", type=int, default=4, metavar="K", help="MWER N-best size")
    p.add_argument("--rnnt-weight", type=float, default=0.01, metavar="W",
                   help="transducer loss added to the MWER loss (default 0.01)")
    p.add_argument("--valid-beam", type=int, default=1, metavar="K",
                   help="beam of the validation WER (default 1 = greedy)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --exp-dir (if any)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set loop.max_steps=200")


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.config is not None:
        return load_config(args.config, args.overrides)
    source = latest_checkpoint(args.exp_dir) if args.resume and args.exp_dir.is_dir() else None
    source = source or (Path(args.init) if args.init else None)
    if source is None:
        raise ConfigError("give a CONFIG (TOML) or --init CKPT to take its training config")
    raw = load_checkpoint(source)["train_config"]
    apply_overrides(raw, args.overrides)
    return TrainConfig.from_dict(raw).validate()


def run(args: argparse.Namespace) -> int:
    opts = StageOptions(stage=args.stage, init=args.init, lm=args.lm, lm_weight=args.lm_weight,
                        lm_loss_scale=args.lm_loss_scale, train_lm=args.train_lm,
                        beam=args.beam, rnnt_weight=args.rnnt_weight,
                        valid_beam=args.valid_beam)
    if args.config is not None and Path(args.config).suffix == ".pt":
        raise ConfigError(f"{args.config}: CONFIG is a TOML file; a checkpoint goes to --init")
    FactorizedTrainer(_config(args), opts, args.exp_dir, resume=args.resume).train()
    return 0
