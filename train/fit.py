"""The training loop: ``edgeasr-train fit CONFIG.toml --exp-dir DIR [--resume]``.

One process per device; under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the model is
wrapped in DistributedDataParallel with NCCL on CUDA and gloo on CPU, and every rank reads its
own shard of each epoch's batches (see :mod:`edgeasr.train.sampler`).

What a step does: batch -> device -> model forward (the model applies SpecAugment and samples a
dynamic chunk size itself in training mode) -> loss -> backward (bf16/fp16 autocast on CUDA
only; CPU stays fp32 so runs are exact) -> gradient clipping -> AdamW step with the learning
rate of :func:`learning_rate` for that step.

Exact resume: a checkpoint holds the model, optimizer, (fp16) grad scaler, step, epoch, the
sampler position and the python/numpy/torch RNG states; the DataLoader gets a private generator,
and validation runs under ``torch.random.fork_rng`` so it never advances the training RNG.
Hence on CPU, N steps straight and N/2 + resume + N/2 give bit-identical parameters
(tests/test_train.py checks it).

Outputs in ``exp_dir``: ``step-N.pt`` (every ``checkpoint_every_minutes`` / ``_steps``, newest
``keep_last`` kept, and when training stops), ``epoch-N.pt`` (every epoch end, all kept),
``log.jsonl`` (one JSON object per log/validation event), ``curves.png``, ``tokenizer.model``,
``config.toml``-equivalent ``train_config.json`` and ``train.log`` (human-readable).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# On a shared CPU, OpenMP threads that spin while waiting make every small op ~100x slower once
# the machine is oversubscribed (measured: 2 threads, load 10 on 2 cores). Passive waiting
# costs nothing when the cores are free. Only effective if torch is not imported yet (the CLI).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from edgeasr.features import FeatureConfig
from edgeasr.metrics import wer
from edgeasr.tokenizer import Tokenizer

from .checkpoint import (
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from .config import ConfigError, ManifestSpec, OptimConfig, TrainConfig, load_config
from .data import AsrDataset, Batch, global_cmvn, make_loader, sampler_for
from .model import LossOutput, ModelConfig, Transducer, greedy_decode
from .model.interaed import KDConfig, attach_kd
from .plot import plot_log
from .warm_start import require_same_features, warm_start_state

__all__ = ["Trainer", "add_arguments", "fit", "learning_rate", "run"]

log = logging.getLogger("edgeasr.train.fit")


def learning_rate(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then ``noam``: decay as ``sqrt(warmup / step)`` (no end
    point needed, so a run can be extended), ``cosine``: half-cosine down to
    ``lr * min_lr_ratio`` at ``total_steps``, or ``constant``.
    """
    s = step + 1
    w = cfg.warmup_steps
    if w and s <= w:
        return cfg.lr * s / w
    if cfg.schedule == "noam":
        return cfg.lr * math.sqrt(w / s) if w else cfg.lr
    if cfg.schedule == "cosine":
        span = max(1, total_steps - w)
        progress = min(1.0, (s - w) / span)
        floor = cfg.min_lr_ratio
        return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return cfg.lr


@dataclass
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistInfo:
    """Initialize torch.distributed from torchrun's environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


class Trainer:
    """Holds the state of one training run; :meth:`train` runs it to the configured end.

    Recipes that train another model on the same loop (``edgeasr-train st``,
    ``transducer-llama``) subclass it and override only the hooks below, so that the loop,
    checkpointing, exact resume, AMP and logging stay one piece of code:

    - :meth:`load_tokenizers`, :meth:`make_model_config`, :meth:`build_model`: what is trained;
    - :meth:`make_dataset`: which utterances, and (via the dataset's ``collate_batch``) which
      batch type;
    - :meth:`forward_batch`, :meth:`objective`: the loss a step minimizes;
    - :attr:`asr_model`, :meth:`transcribe`, :meth:`score`: what validation decodes and scores;
    - :meth:`state_dict`, :meth:`load_state_dict`, :meth:`recipe_options`: what is saved.
    """

    #: False for recipes whose sampler/objective are not sharded across ranks: a ``torchrun``
    #: launch is refused up front instead of training every rank on the same batches.
    supports_ddp: ClassVar[bool] = True

    def __init__(self, config: TrainConfig, exp_dir: str | Path, resume: bool = False,
                 init: str = "") -> None:
        """``init``: a checkpoint whose weights start a new run (ignored when resuming, as the
        run's own checkpoint holds them): its tokenizer is taken, :meth:`build_model` loads its
        weights and its CMVN stays (no re-estimate)."""
        self.cfg = config
        self.exp_dir = Path(exp_dir)
        self.dist = setup_distributed()
        if self.dist.distributed and not self.supports_ddp:
            raise ValueError(f"{type(self).__name__} trains in one process; launch it without "
                             "torchrun")
        if config.loop.threads:
            torch.set_num_threads(config.loop.threads)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        # Only rank 0 talks; the other ranks report problems (warnings) only.
        _setup_logging(self.exp_dir / "train.log" if self.dist.is_main else None,
                       logging.INFO if self.dist.is_main else logging.WARNING)

        self.resumed_from = latest_checkpoint(self.exp_dir)
        if not resume and self.resumed_from is not None:
            # Starting over would rotate the earlier run's checkpoints away (keep_last).
            raise ConfigError(f"{self.exp_dir} holds checkpoints of an earlier run (latest "
                             f"{self.resumed_from.name}): pass --resume to continue it, or "
                             "choose a new --exp-dir")
        if resume and self.resumed_from is None:
            log.info("--resume: no checkpoint in %s, starting from scratch", self.exp_dir)
        ckpt = load_checkpoint(self.resumed_from) if self.resumed_from else None
        init_state = load_checkpoint(init) if ckpt is None and init else None

        self.load_tokenizers(ckpt, init_state)
        self.model_config = self.make_model_config()
        _require_model_config(ckpt, self.model_config.to_dict(), str(self.resumed_from))
        self.feature_config = FeatureConfig.from_dict(config.features)

        # Same initial weights on every rank (DDP would also broadcast rank 0's).
        _seed_everything(config.seed)
        self.model = self.build_model(ckpt, init_state).to(self.dist.device)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],  # frozen parts stay out
            lr=config.optim.lr,
            betas=tuple(config.optim.betas),
            eps=config.optim.eps,
            weight_decay=config.optim.weight_decay,
        )
        cuda = self.dist.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.loop.amp)
        if not cuda:
            self.amp_dtype = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        d = config.data
        self.train_set = self.make_dataset(d.train)
        self.valid_sets = {s.name: self.make_dataset([s], max_utts=d.valid_max_utts)
                           for s in d.valid}
        self.sampler = sampler_for(self.train_set, d.max_duration, d.num_buckets, config.seed,
                                   self.dist.rank, self.dist.world_size)
        self.loader = make_loader(self.train_set, self.sampler, d.num_workers)

        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.resumed_mid_epoch = False
        if ckpt is not None:
            self.load_state_dict(ckpt)
            log.info("resumed from %s at step %d, epoch %d, batch %d", self.resumed_from,
                     self.step, self.epoch, self.batches_done)
        else:
            if self.dist.is_main:  # records of a killed run that never checkpointed
                (self.exp_dir / "log.jsonl").unlink(missing_ok=True)
            if init_state is None and config.loop.cmvn_utts > 0:
                self._init_cmvn()

        self.ddp: nn.Module = self.objective()
        if self.dist.distributed:
            self.ddp = DistributedDataParallel(
                self.ddp,
                device_ids=[self.dist.local_rank] if cuda else None,
                find_unused_parameters=True,  # null-predictor / CTC branches vary per step
            )
        self.total_steps = config.optim.total_steps or (
            config.loop.max_steps or config.loop.max_epochs * len(self.sampler)
        )
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model: %.2f M parameters; train set %.2f h, %d utterances, %d batches/epoch "
                 "per rank; world size %d on %s", n_params / 1e6, self.train_set.total_hours,
                 len(self.train_set), len(self.sampler), self.dist.world_size, self.dist.device)
        if self.dist.is_main:
            (self.exp_dir / "train_config.json").write_text(
                json.dumps({**config.to_dict(), **self.recipe_options()}, indent=2) + "\n")

    # ------------------------------------------------------------------ hooks: the model
    def load_tokenizers(self, ckpt: dict[str, Any] | None, init: dict[str, Any] | None) -> None:
        """Set ``self.tokenizer``: a resumed (or initialized) run uses the exact model stored
        in its checkpoint, a new one the configured file; either way it is kept beside the
        checkpoints as ``tokenizer.model``."""
        self.tokenizer = self._keep_tokenizer(ckpt or init, "tokenizer", self.cfg.tokenizer)

    def make_model_config(self) -> Any:
        """The run's model config (stored in every checkpoint as ``model_config``; a resume
        must match it): ``[model]`` with the tokenizer's vocabulary size."""
        model_dict = {**self.cfg.model}
        if model_dict.setdefault("vocab_size", self.tokenizer.vocab_size) != (
            self.tokenizer.vocab_size
        ):
            raise ConfigError(
                f"model.vocab_size = {model_dict['vocab_size']} but the tokenizer has "
                f"{self.tokenizer.vocab_size} pieces"
            )
        return ModelConfig.from_dict(model_dict)

    def build_model(self, ckpt: dict[str, Any] | None, init: dict[str, Any] | None
                    ) -> nn.Module:
        """The model to train, on the CPU, from the seeded RNG. A resumed run's weights are
        loaded later by :meth:`load_state_dict` (``ckpt`` is there for recipes whose model
        shape is recorded in it); ``init`` weights are loaded here."""
        model = Transducer(self.model_config)
        if init is not None:
            require_same_features(init, self.feature_config, "init checkpoint")
            state, notes = warm_start_state(init, model, "init checkpoint")
            model.load_state_dict(state)
            log.info("weights from the init checkpoint%s", "".join(f"; {n}" for n in notes))
        if self.cfg.kd:  # training-only KD decoders, before the optimizer sees the parameters
            attach_kd(model, KDConfig.from_dict(self.cfg.kd), None, self.tokenizer.model_bytes)
        return model

    @property
    def asr_model(self) -> Transducer:
        """The speech-recognition transducer inside the trained model: its encoder holds the
        CMVN estimated at the start and validation WER is its greedy search."""
        return self.model  # type: ignore[return-value]

    def make_dataset(self, specs: list[ManifestSpec], max_utts: int = 0) -> AsrDataset:
        """The training set (all of ``specs``) or one validation set (``max_utts`` per
        manifest), with the configured duration limits."""
        d = self.cfg.data
        return AsrDataset(specs, self.tokenizer, self.feature_config, d.min_duration,
                          d.max_utt_duration, max_utts=max_utts,
                          frame_rate=self.encoder_frame_rate)

    @property
    def encoder_frame_rate(self) -> float:
        """Encoder frames per second of the model being trained (12.5 at 8x subsampling)."""
        return 1000.0 / (self.feature_config.frame_shift_ms * self.asr_model.cfg.subsampling)

    def objective(self) -> nn.Module:
        """The module a training step calls (and DDP wraps): the model itself unless a recipe
        trains another objective around it (it must return the model's LossOutput)."""
        return self.model

    def forward_batch(self, module: nn.Module, batch: Batch) -> LossOutput:
        """Loss of ``module`` (the objective in training, the model in validation) on a batch
        already on the device."""
        return module(batch.features, batch.feature_lens, batch.targets, batch.target_lens)

    def recipe_options(self) -> dict[str, Any]:
        """What a recipe adds to the config in ``train_config.json`` (its own options)."""
        return {}

    def _keep_tokenizer(self, state: dict[str, Any] | None, key: str, path: str) -> Tokenizer:
        """Tokenizer ``key`` of a checkpoint ``state`` (else the file ``path``), also written
        to ``exp_dir/<key>.model`` on rank 0 so a run folder is self-contained."""
        file = self.exp_dir / f"{key}.model"
        if state is not None:
            if self.dist.is_main:
                file.write_bytes(state[key])
            return Tokenizer.from_bytes(state[key], f"the checkpoint's {key}")
        tokenizer = Tokenizer(path)
        if self.dist.is_main and Path(path).resolve() != file.resolve():
            shutil.copyfile(path, file)
        return tokenizer

    # ------------------------------------------------------------------ state
    def _init_cmvn(self) -> None:
        """Global CMVN from training features (rank 0; DDP broadcasts buffers to the others)."""
        if not self.dist.is_main and self.dist.distributed:
            return
        t0 = time.time()
        mean, std = global_cmvn(self.train_set, self.cfg.loop.cmvn_utts, seed=self.cfg.seed)
        self.asr_model.encoder.cmvn.set_stats(torch.from_numpy(mean), torch.from_numpy(std))
        log.info("global CMVN from %d utterances in %.1f s: mean %.2f, std %.2f (averaged)",
                 min(self.cfg.loop.cmvn_utts, len(self.train_set)), time.time() - t0,
                 float(mean.mean()), float(std.mean()))

    def state_dict(self) -> dict[str, Any]:
        """Everything for inference and an exact resume (plain data, see checkpoint.py).
        Recipes extend it (``super().state_dict()`` plus their entries)."""
        state = {
            "model_config": self.model_config.to_dict(),
            "model": self.model.state_dict(),
            "tokenizer": self.tokenizer.model_bytes,
            "train_config": self.cfg.to_dict(),
            "feature_config": self.feature_config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            # The loop's epoch, not the sampler's: at an epoch boundary the loop has moved on
            # (epoch + 1, batch 0) before the sampler is told, and a resume must not replay.
            "sampler": {**self.sampler.state_dict(self.batches_done), "epoch": self.epoch},
            "rng": get_rng_state(),
            "world_size": self.dist.world_size,
        }
        return state

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Resume from a :meth:`state_dict`: weights, optimizer, loop position and RNGs."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.sampler.load_state_dict(ckpt["sampler"])
        self.epoch = self.sampler.epoch
        self.batches_done = int(ckpt["sampler"]["batches_done"])
        self.resumed_mid_epoch = True
        if int(ckpt.get("world_size", 1)) != self.dist.world_size:
            log.warning("checkpoint was written with world size %s, now %d: the sampler "
                        "position is per rank, so the rest of this epoch is re-sharded",
                        ckpt.get("world_size"), self.dist.world_size)
        set_rng_state(ckpt["rng"])
        before = ckpt["train_config"].get("data", {}).get("train")
        if before != self.cfg.to_dict()["data"]["train"]:
            log.warning("training data changed since the checkpoint (%s -> %s): the run "
                        "continues at the same epoch and batch index of the new data's order",
                        [s["name"] for s in before or []],
                        [s.name for s in self.cfg.data.train])
        if self.dist.is_main:
            self._truncate_log(self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log records newer than the checkpoint: a killed run logged steps that the
        resumed run will redo, and the curves must not show them twice."""
        path = self.exp_dir / "log.jsonl"
        if not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines()
                if _record_step(line) <= step]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)

    def save(self, name: str) -> Path | None:
        """Write ``exp_dir/name`` on rank 0 (all ranks hold the same weights)."""
        if not self.dist.is_main:
            return None
        path = save_checkpoint(self.exp_dir / name, self.state_dict())
        rotate_checkpoints(self.exp_dir, self.cfg.loop.keep_last)
        log.info("saved %s", path)
        return path

    # ------------------------------------------------------------------ loop
    def _all_have(self, batch: Batch | None) -> bool:
        """True when every rank has a batch; a rank whose batch was all bad audio makes all
        ranks skip the step together (one rank skipping alone would hang the all-reduce)."""
        have = torch.tensor([0 if batch is None else 1], dtype=torch.int64)
        if self.dist.distributed:
            if self.dist.device.type == "cuda":
                have = have.to(self.dist.device)
            dist.all_reduce(have, op=dist.ReduceOp.MIN)
        return bool(have.item())

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on ``batch``; returns the numbers to log."""
        lr = learning_rate(self.step, self.cfg.optim, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ddp.train()
        b = batch.to(self.dist.device)
        with _autocast(self.dist.device, self.amp_dtype):
            out = self.forward_batch(self.ddp, b)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        parts = {k: float(v) for k, v in out.parts.items()}
        loss = float(out.loss.detach())
        # The model's loss is a mean over utterances of summed token NLLs; per token it is
        # comparable across duration buckets.
        per_token = loss * len(batch) / max(1, int(batch.target_lens.sum()))
        return {"loss": loss, "loss_per_token": per_token, "lr": lr, "grad_norm": grad_norm,
                "parts": parts}

    def train(self) -> dict[str, Any]:
        """Run until ``max_epochs`` or ``max_steps``; returns the last validation results."""
        lp = self.cfg.loop
        last_ckpt_time = time.monotonic()
        window_t0, window_steps, window_audio = time.monotonic(), 0, 0.0
        results: dict[str, Any] = {}
        stop = False
        while self.epoch < lp.max_epochs and not stop:
            if not self.resumed_mid_epoch:
                self.sampler.set_epoch(self.epoch)
                self.batches_done = 0
            self.resumed_mid_epoch = False
            for batch in self.loader:
                self.batches_done += 1
                if not self._all_have(batch):
                    continue
                stats = self.train_step(batch)
                window_steps += 1
                window_audio += float(batch.feature_lens.sum()) * 0.01
                if not math.isfinite(stats["loss"]):
                    log.warning("step %d: non-finite loss %s (batch %s...)", self.step,
                                stats["loss"], batch.ids[:3])
                if self.step % lp.log_every == 0:
                    elapsed = time.monotonic() - window_t0
                    self._log({"kind": "train", "step": self.step, "epoch": self.epoch,
                               "batch": self.batches_done, **stats,
                               "steps_per_sec": window_steps / elapsed,
                               "audio_sec_per_sec": window_audio * self.dist.world_size / elapsed})
                    window_t0, window_steps, window_audio = time.monotonic(), 0, 0.0
                if lp.valid_every_steps and self.step % lp.valid_every_steps == 0:
                    results = self.validate()
                if lp.max_steps and self.step >= lp.max_steps:
                    stop = True
                    break
                minutes = (time.monotonic() - last_ckpt_time) / 60
                due_time = lp.checkpoint_every_minutes and minutes >= lp.checkpoint_every_minutes
                due_step = lp.checkpoint_every_steps and self.step % lp.checkpoint_every_steps == 0
                if due_time or due_step:
                    self.save(f"step-{self.step}.pt")
                    last_ckpt_time = time.monotonic()
            if self.batches_done >= len(self.sampler):  # epoch complete (also when stopping)
                self.epoch += 1
                self.batches_done = 0
                results = self.validate()
                self.save(f"epoch-{self.epoch}.pt")
                last_ckpt_time = time.monotonic()
            elif stop:
                self.save(f"step-{self.step}.pt")
        if self.dist.distributed:
            dist.barrier()
        return results

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Loss and greedy WER on each validation set (rank 0; the others wait)."""
        results: dict[str, Any] = {}
        if self.dist.is_main and self.valid_sets:
            with torch.random.fork_rng(devices=[]):
                self.model.eval()
                for name, ds in self.valid_sets.items():
                    results[name] = self._validate_set(name, ds)
                self.model.train()
            self._plot()
        if self.dist.distributed:
            dist.barrier()
        return results

    def _validate_set(self, name: str, ds: AsrDataset) -> dict[str, Any]:
        t0 = time.time()
        sampler = sampler_for(ds, self.cfg.data.max_duration, self.cfg.data.num_buckets,
                              seed=0, shuffle=False)
        total_loss, n_utts, n_tokens = 0.0, 0, 0
        texts: defaultdict[str, list[str]] = defaultdict(list)
        for batch in make_loader(ds, sampler, 0):
            if batch is None:
                continue
            b = batch.to(self.dist.device)
            with _autocast(self.dist.device, self.amp_dtype):
                out = self.forward_batch(self.model, b)
            total_loss += float(out.loss) * len(b)
            n_utts += len(b)
            n_tokens += int(b.target_lens.sum())
            for key, values in self.transcribe(b).items():
                texts[key] += values
        result = {"kind": "valid", "set": name, "step": self.step, "epoch": self.epoch,
                  "loss": total_loss / max(1, n_utts),
                  "loss_per_token": total_loss / max(1, n_tokens), **self.score(texts),
                  "utts": n_utts,
                  "seconds": time.time() - t0,
                  "examples": [{key: values[i] for key, values in texts.items()}
                               for i in range(min(3, n_utts))]}
        self._log(result)
        return result

    def transcribe(self, batch: Batch) -> dict[str, list[str]]:
        """Validation texts of a batch, one list per kind, one entry per utterance: ``ref``
        and ``hyp`` (greedy search of :attr:`asr_model`); recipes add theirs. The first three
        utterances' texts are logged as examples."""
        hyps = greedy_decode(self.asr_model, batch.features, batch.feature_lens)
        return {"ref": list(batch.texts), "hyp": [self.tokenizer.decode(ids) for ids in hyps]}

    def score(self, texts: dict[str, list[str]]) -> dict[str, float]:
        """Scores of a whole validation set from its :meth:`transcribe` texts: the WER."""
        return {"wer": wer(texts["ref"], texts["hyp"]).rate}

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        with (self.exp_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        brief = {k: (round(v, 4) if isinstance(v, float) else v)
                 for k, v in record.items() if k not in ("examples", "time", "parts")}
        log.info("%s", brief)

    def _plot(self) -> None:
        try:
            plot_log(self.exp_dir / "log.jsonl", self.exp_dir / "curves.png")
        except (OSError, ValueError) as e:  # a plot must never stop training
            log.warning("could not draw curves.png: %s", e)


def _require_model_config(state: dict[str, Any] | None, expected: dict[str, Any], what: str
                          ) -> None:
    """A checkpoint's weights fit only a model of the config they were trained with."""
    if state is not None and state["model_config"] != expected:
        raise ConfigError(f"{what}: its model config differs from [model]; train with the "
                          "config the checkpoint was written with")


def _record_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return math.inf  # a torn last line of a killed run: drop it


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _setup_logging(log_file: Path | None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    root = logging.getLogger("edgeasr")
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_edgeasr_fit", False):
            root.removeHandler(h)
            h.close()
    for h in handlers:
        h.setFormatter(logging.Formatter(fmt))
        h._edgeasr_fit = True  # type: ignore[attr-defined]
        root.addHandler(h)


def fit(config: TrainConfig, exp_dir: str | Path, resume: bool = False, init: str = ""
        ) -> dict[str, Any]:
    """Train (or resume) a run; returns the final validation results."""
    trainer = Trainer(config, exp_dir, resume=resume, init=init)
    try:
        return trainer.train()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------- CLI
NAME = "fit"
HELP = "train a transducer from a TOML config (resumable, DDP via torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="training config (TOML)")
    parser.add_argument("--exp-dir", type=Path, required=True, help="output folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --exp-dir (if any); without "
                             "it, a folder that holds checkpoints is refused")
    parser.add_argument("--init", default="", metavar="CHECKPOINT",
                        help="start from these weights with a fresh optimizer, e.g. the shipped "
                             "models/default/checkpoint.pt (its tokenizer and CMVN are kept; "
                             "ignored when --resume finds a checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set loop.max_steps=100")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    fit(config, args.exp_dir, resume=args.resume, init=args.init)
    return 0
