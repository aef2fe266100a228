"""Calibration inputs for static int8 quantization, taken from real speech.

Static quantization fixes every activation's scale from what it sees during calibration, so the
inputs must look like deployment: real fbank features (the runtime's own extractor), chunked
exactly as streaming does, with the caches carried from chunk to chunk (the attention cache of a
fresh stream is zeros, later it holds real activations; both occur). The joint and predictor
graphs are calibrated on the encoder frames those chunks produce and on predictor outputs for
token contexts drawn from the vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeasr.audio import load_audio
from edgeasr.features import FeatureConfig, compute_features
from edgeasr.manifest import read_manifest

__all__ = ["load_calibration_features", "calibration_inputs"]


def load_calibration_features(
    manifest: str | os.PathLike[str], config: FeatureConfig, max_utterances: int = 8
) -> list[np.ndarray]:
    """Fbank features ``[T, F]`` of the first ``max_utterances`` cuts of a JSONL manifest."""
    cuts = read_manifest(Path(manifest))[:max_utterances]
    if not cuts:
        raise ValueError(f"{manifest}: no utterances for calibration")
    out = []
    for cut in cuts:
        audio = load_audio(cut.audio, target_rate=config.sample_rate)
        start = int(cut.offset * config.sample_rate)
        stop = start + int(cut.duration * config.sample_rate) if cut.duration else None
        out.append(compute_features(audio[start:stop], config))
    return out


@torch.no_grad()
def calibration_inputs(
    model: nn.Module, features: list[np.ndarray], max_chunks: int = 32, seed: int = 0
) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """Per-graph calibration input tuples (graph input order) from streaming ``features``."""
    from edgeasr.train.model import EncoderCaches

    cfg = model.cfg
    t_in = cfg.chunk_input_frames()
    shift = cfg.subsampling * cfg.chunk_size
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[tuple[torch.Tensor, ...]]] = {
        "encoder": [], "predictor": [], "joint_blank": [], "joint_labels": [], "iam_joint": []
    }
    for feats in features:
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        caches = EncoderCaches.init(1, cfg)
        for start in range(0, x.shape[0] - t_in + 1, shift):
            if len(out["encoder"]) >= max_chunks:
                break
            chunk = x[start : start + t_in][None]
            out["encoder"].append((chunk, *caches.to_tuple()))
            frames, caches = model.encoder.forward_chunk(chunk, caches)
            out["iam_joint"].append((frames,))
            context = torch.randint(0, cfg.vocab_size, (cfg.chunk_size, cfg.context_size),
                                    generator=gen)
            context[: cfg.chunk_size // 2] = 0  # start-of-utterance contexts occur too
            out["predictor"].append((context,))
            p = model.predictor.step(context)
            e = frames[0]
            out["joint_blank"].append((e, p))
            out["joint_labels"].append((torch.tanh(e + p),))
    if not out["encoder"]:
        raise ValueError(
            f"calibration features are shorter than one chunk ({t_in} frames)"
        )
    return out
