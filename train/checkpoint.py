"""Checkpoints: atomic save, keep-last-K rotation, averaging, and loading for inference.

Format (one ``torch.save`` file, readable with ``torch.load(weights_only=True)``, so only
tensors, dicts, lists, tuples, numbers, strings and bytes are stored, never pickled objects)::

    {
      "format": "edgeasr-checkpoint", "version": 1,
      "model_config": dict,       # ModelConfig fields
      "model": state_dict,        # includes the CMVN buffer
      "tokenizer": bytes,         # the sentencepiece .model file
      "train_config": dict,       # TrainConfig.to_dict()
      "feature_config": dict,     # FeatureConfig.to_dict()
      # training state, present in checkpoints written by `fit` (absent after `average`):
      "optimizer": dict, "step": int, "epoch": int, "sampler": dict, "rng": dict, ...
    }

Why ``weights_only``: loading a pickle executes code, so a checkpoint downloaded from
elsewhere must never be unpickled freely; and a format made only of plain data survives
refactoring of the classes that wrote it.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeasr.errors import EdgeAsrError

__all__ = [
    "CheckpointError",
    "average_checkpoints",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "load_for_inference",
    "rotate_checkpoints",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "edgeasr-checkpoint"
VERSION = 1
#: Keys every checkpoint has (training state is optional).
REQUIRED = ("model_config", "model", "tokenizer", "train_config", "feature_config")

_STEP_RE = re.compile(r"^step-(\d+)\.pt$")
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


class CheckpointError(EdgeAsrError, ValueError):
    """A checkpoint file that is missing, unreadable, or lacks required entries."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a run killed mid-save leaves the previous file intact."""
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint state lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` onto the CPU and check its entries."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"{path}: not a readable edgeasr checkpoint ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeasr checkpoint (no format marker)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return state


def save_text_model(path: str | os.PathLike[str], fmt: str, model: torch.nn.Module,
                    tokenizer: Any, **extra: Any) -> Path:
    """Write a language model (the Llama LM, the masked-LM teacher) as one self-contained file:
    its format tag, ``model.cfg`` as a dict, the weights and the bytes of the tokenizer it was
    trained with, plus ``extra`` entries; atomically, so a killed run keeps the previous file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": fmt, "config": model.cfg.to_dict(), "model": model.state_dict(),
             "tokenizer": tokenizer.model_bytes, **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_text_model(path: str | os.PathLike[str], fmt: str,
                    build: Callable[[dict[str, Any]], torch.nn.Module],
                    what: str) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Load a file written by :func:`save_text_model` (``weights_only``): ``(model in eval mode
    built by ``build(config)``, its Tokenizer, the raw dict)``; ``what`` names it in errors."""
    from edgeasr.tokenizer import Tokenizer

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: {what} checkpoint not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"{p}: not a readable {what} checkpoint ({e})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{p}: not an edgeasr {what} checkpoint (format {fmt!r})")
    model = build(state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, Tokenizer.from_bytes(state["tokenizer"], str(p)), state


def step_checkpoints(exp_dir: str | os.PathLike[str]) -> list[Path]:
    """``step-N.pt`` files of an experiment, oldest first."""
    found = []
    for p in Path(exp_dir).glob("step-*.pt"):
        m = _STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(exp_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest training step (step-N.pt or epoch-N.pt), or None."""
    best: tuple[int, int, Path] | None = None
    for p in Path(exp_dir).glob("*.pt"):
        if not (_STEP_RE.match(p.name) or _EPOCH_RE.match(p.name)):
            continue
        try:
            step = int(torch.load(p, map_location="cpu", weights_only=True)["step"])
        except Exception:  # a corrupt file is skipped; an older good one is still usable
            continue
        key = (step, p.stat().st_mtime_ns, p)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def rotate_checkpoints(exp_dir: str | os.PathLike[str], keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` step checkpoints; returns the deleted paths."""
    steps = step_checkpoints(exp_dir)
    doomed = steps[: max(0, len(steps) - keep_last)]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def average_checkpoints(paths: list[str | os.PathLike[str]],
                        weights: list[float] | None = None) -> dict[str, Any]:
    """Average the model parameters of several checkpoints of one network.

    The checkpoints of one run (icefall's ``--avg``), or fine-tunes of one model: weights of
    models that share an ancestor interpolate (a "model soup"; the default model is one).
    ``weights`` (one per checkpoint, >= 0, normalized to sum 1; default equal) makes it a
    weighted mean. Floating-point tensors are averaged in float64 and cast back; integer
    buffers (counters) are taken from the last checkpoint. The result holds the non-training
    entries of the last checkpoint plus ``averaged_from`` (and ``average_weights``) and is
    itself a valid checkpoint for inference.
    """
    if not paths:
        raise CheckpointError("average_checkpoints: no checkpoints given")
    if weights is None:
        w = [1.0 / len(paths)] * len(paths)
    else:
        if len(weights) != len(paths):
            raise CheckpointError(
                f"average_checkpoints: {len(weights)} weights for {len(paths)} checkpoints")
        if any(not x >= 0 for x in weights) or not sum(weights) > 0:
            raise CheckpointError(
                f"average_checkpoints: weights must be >= 0 with a positive sum, got {weights}")
        total_weight = float(sum(weights))
        w = [float(x) / total_weight for x in weights]
    states = [load_checkpoint(p) for p in paths]
    keys = list(states[-1]["model"])
    for p, s in zip(paths, states, strict=True):
        if list(s["model"]) != keys:
            raise CheckpointError(f"{p}: model parameters differ from {paths[-1]}")
        if s["model_config"] != states[-1]["model_config"]:
            raise CheckpointError(f"{p}: model_config differs from {paths[-1]}")
    averaged: dict[str, torch.Tensor] = {}
    for k in keys:
        last = states[-1]["model"][k]
        if torch.is_floating_point(last):
            total = sum(wi * s["model"][k].to(torch.float64) for wi, s in zip(w, states,
                                                                                strict=True))
            averaged[k] = total.to(last.dtype)
        else:
            averaged[k] = last.clone()
    out = {k: states[-1][k] for k in REQUIRED}
    out["model"] = averaged
    out["step"] = int(states[-1].get("step", 0))
    out["averaged_from"] = [str(p) for p in paths]
    if weights is not None:
        out["average_weights"] = w
    return out


def get_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy (legacy global) and torch (CPU and CUDA) as plain data."""
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": dict(np_state["state"])}
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = {**state["numpy"], "state": dict(state["numpy"]["state"])}
    np_state["state"]["key"] = np_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_for_inference(path: str | os.PathLike[str]) -> tuple[Any, bytes, dict[str, Any]]:
    """Load a checkpoint for export or evaluation.

    Returns ``(model, tokenizer_bytes, configs)``: the ``Transducer`` in eval mode on the CPU,
    the sentencepiece model bytes, and ``{"model_config", "feature_config", "train_config"}``
    as plain dicts.
    """
    from .model import ModelConfig, Transducer  # the model package imports torch modules

    state = load_checkpoint(path)
    model = Transducer(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    configs = {k: state[k] for k in ("model_config", "feature_config", "train_config")}
    return model, bytes(state["tokenizer"]), configs
