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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from .config import OptimConfig, TrainConfig, load_config
from .data import AsrDataset, Batch, global_cmvn, make_loader, sampler_for
from .model import ModelConfig, Transducer, greedy_decode
from .model.interaed import KDConfig, attach_kd
from .plot import plot_log

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
    """Holds the state of one training run; :meth:`train` runs it to the configured end."""

    def __init__(self, config: TrainConfig, exp_dir: str | Path, resume: bool = False) -> None:
        self.cfg = config
        self.exp_dir = Path(exp_dir)
        self.dist = setup_distributed()
        if config.loop.threads:
            torch.set_num_threads(config.loop.threads)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        # Only rank 0 talks; the other ranks report problems (warnings) only.
        _setup_logging(self.exp_dir / "train.log" if self.dist.is_main else None,
                       logging.INFO if self.dist.is_main else logging.WARNING)

        ckpt_path = latest_checkpoint(self.exp_dir) if resume else None
        if resume and ckpt_path is None:
            log.info("--resume: no checkpoint in %s, starting from scratch", self.exp_dir)
        ckpt = load_checkpoint(ckpt_path) if ckpt_path else None

        # Tokenizer: a resumed run uses the exact model it started with.
        tok_file = self.exp_dir / "tokenizer.model"
        if ckpt is not None:
            if self.dist.is_main:
                tok_file.write_bytes(ckpt["tokenizer"])
            self.tokenizer = Tokenizer.from_bytes(ckpt["tokenizer"], str(ckpt_path))
        else:
            self.tokenizer = Tokenizer(config.tokenizer)
            if self.dist.is_main and Path(config.tokenizer).resolve() != tok_file.resolve():
                shutil.copyfile(config.tokenizer, tok_file)

        model_dict = {**config.model}
        if model_dict.setdefault("vocab_size", self.tokenizer.vocab_size) != (
            self.tokenizer.vocab_size
        ):
            raise ValueError(
                f"model.vocab_size = {model_dict['vocab_size']} but the tokenizer has "
                f"{self.tokenizer.vocab_size} pieces"
            )
        self.model_config = ModelConfig.from_dict(model_dict)
        self.feature_config = FeatureConfig.from_dict(config.features)
        if ckpt is not None and ckpt["model_config"] != self.model_config.to_dict():
            raise ValueError(f"{ckpt_path}: model config differs from {config.model}; "
                             "resume with the config the run started with")

        # Same initial weights on every rank (DDP would also broadcast rank 0's).
        _seed_everything(config.seed)
        self.model = Transducer(self.model_config).to(self.dist.device)
        if config.kd:  # training-only KD decoders, before the optimizer sees the parameters
            attach_kd(self.model, KDConfig.from_dict(config.kd), None, self.tokenizer.model_bytes)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
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
        self.train_set = AsrDataset(
            d.train, self.tokenizer, self.feature_config, d.min_duration, d.max_utt_duration
        )
        self.valid_sets = {
            s.name: AsrDataset([s], self.tokenizer, self.feature_config, d.min_duration,
                               d.max_utt_duration, max_utts=d.valid_max_utts)
            for s in d.valid
        }
        self.sampler = sampler_for(self.train_set, d.max_duration, d.num_buckets, config.seed,
                                   self.dist.rank, self.dist.world_size)
        self.loader = make_loader(self.train_set, self.sampler, d.num_workers)

        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.resumed_mid_epoch = False
        if ckpt is not None:
            self._restore(ckpt)
            log.info("resumed from %s at step %d, epoch %d, batch %d", ckpt_path, self.step,
                     self.epoch, self.batches_done)
        elif config.loop.cmvn_utts > 0:
            self._init_cmvn()

        self.ddp: nn.Module = self.model
        if self.dist.distributed:
            self.ddp = DistributedDataParallel(
                self.model,
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
                json.dumps(config.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ state
    def _init_cmvn(self) -> None:
        """Global CMVN from training features (rank 0; DDP broadcasts buffers to the others)."""
        if not self.dist.is_main and self.dist.distributed:
            return
        t0 = time.time()
        mean, std = global_cmvn(self.train_set, self.cfg.loop.cmvn_utts, seed=self.cfg.seed)
        self.model.encoder.cmvn.set_stats(torch.from_numpy(mean), torch.from_numpy(std))
        log.info("global CMVN from %d utterances in %.1f s: mean %.2f, std %.2f (averaged)",
                 min(self.cfg.loop.cmvn_utts, len(self.train_set)), time.time() - t0,
                 float(mean.mean()), float(std.mean()))

    def state_dict(self) -> dict[str, Any]:
        """Everything for inference and an exact resume (plain data, see checkpoint.py)."""
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

    def _restore(self, ckpt: dict[str, Any]) -> None:
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
            out = self.ddp(b.features, b.feature_lens, b.targets, b.target_lens)
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
        total_loss, n_utts, n_tokens, refs, hyps = 0.0, 0, 0, [], []
        for batch in make_loader(ds, sampler, 0):
            if batch is None:
                continue
            b = batch.to(self.dist.device)
            with _autocast(self.dist.device, self.amp_dtype):
                out = self.model(b.features, b.feature_lens, b.targets, b.target_lens)
            total_loss += float(out.loss) * len(b)
            n_utts += len(b)
            n_tokens += int(b.target_lens.sum())
            for ids in greedy_decode(self.model, b.features, b.feature_lens):
                hyps.append(self.tokenizer.decode(ids))
            refs += b.texts
        score = wer(refs, hyps)
        result = {"kind": "valid", "set": name, "step": self.step, "epoch": self.epoch,
                  "loss": total_loss / max(1, n_utts),
                  "loss_per_token": total_loss / max(1, n_tokens), "wer": score.rate,
                  "utts": n_utts,
                  "seconds": time.time() - t0,
                  "examples": [{"ref": r, "hyp": h}
                               for r, h in zip(refs[:3], hyps[:3], strict=True)]}
        self._log(result)
        return result

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


def fit(config: TrainConfig, exp_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a run; returns the final validation results."""
    trainer = Trainer(config, exp_dir, resume=resume)
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
                        help="continue from the newest checkpoint in --exp-dir (if any)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set loop.max_steps=100")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    fit(config, args.exp_dir, resume=args.resume)
    return 0
