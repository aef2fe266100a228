"""PyTorch backend: the backend interface on an in-memory ``edgeasr.train.model.Transducer``.

It runs the very modules the model was trained with, so it is the reference the exported
backends are compared against, and it lets a freshly trained checkpoint be streamed before any
export. It needs torch (``pip install edgeasr[train]``); nothing on the ONNX Runtime path
imports this module.

The joint is split exactly as the exported ``joint_blank`` / ``joint_labels`` graphs are
(:mod:`edgeasr.export.graphs`): ``joint_blank`` computes ``h = tanh(e + p)``, the blank logit and
the duration logits; ``joint_labels`` the label log-softmax from ``h``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeasr.backends.base import BackendError, BackendSpec, Caches, CacheSpec

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the install
    raise BackendError(
        "the torch backend needs PyTorch: pip install 'edgeasr[train]' "
        "(or use backend='onnxruntime')"
    ) from e

__all__ = ["CHECKPOINT_NAME", "TorchBackend", "spec_from_model_config"]

#: File name of a training checkpoint stored inside a bundle for the torch backend.
CHECKPOINT_NAME = "checkpoint.pt"


def spec_from_model_config(
    cfg: Any,
    *,
    frame_shift_s: float = 0.01,
    iam_threshold: float = 0.95,
    hat_threshold: float = 0.95,
) -> BackendSpec:
    """The runtime spec of a ``ModelConfig`` (chunk geometry and tail padding as export writes
    them, via :class:`edgeasr.bundle.ChunkProfile`)."""
    from edgeasr.bundle import ChunkProfile
    from edgeasr.train.model.encoder import CACHE_NAMES

    prof = ChunkProfile(
        chunk_frames=cfg.chunk_size,
        subsampling_factor=cfg.subsampling,
        pad_length=cfg.pad_length,
        left_context=cfg.left_context,
        frame_shift_s=frame_shift_s,
    )
    d, lay = cfg.d_model, cfg.num_layers
    shapes = {
        "attn_cache": ((lay, cfg.left_context, 1, d), "float32", 2),
        "conv_cache": ((lay, cfg.conv_kernel - 1, 1, d), "float32", 2),
        "processed_frames": ((1,), "int64", 0),
    }
    return BackendSpec(
        vocab_size=cfg.vocab_size,
        joint_dim=cfg.joint_dim,
        chunk_frames=prof.chunk_frames,
        feature_frames=prof.input_frames,
        feature_shift=prof.feature_frames_per_chunk,
        frame_shift_s=prof.encoder_frame_shift_s,
        feature_dim=cfg.feature_dim,
        context_size=cfg.context_size,
        durations=tuple(int(x) for x in cfg.durations),
        tail_padding_s=prof.tail_padding_seconds,
        caches=tuple(CacheSpec(n, *shapes[n]) for n in CACHE_NAMES),
        iam_threshold=iam_threshold,
        hat_threshold=hat_threshold,
        max_symbols_per_frame=4,  # as the training side's reference greedy_decode
    )


class TorchBackend:
    """Backend over a ``Transducer`` module (eval mode, no autograd)."""

    def __init__(
        self,
        model: Any,
        spec: BackendSpec | None = None,
        *,
        num_threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        if num_threads is not None:
            if num_threads < 1:
                raise BackendError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec or spec_from_model_config(model.cfg)
        self._names = [c.name for c in self.spec.caches]

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, num_threads: int | None = None, device: str = "cpu"
    ) -> tuple[TorchBackend, bytes]:
        """Load a training checkpoint; returns the backend and the sentencepiece model bytes."""
        from edgeasr.train.checkpoint import load_for_inference

        try:
            model, tok, configs = load_for_inference(path)
        except (OSError, KeyError, ValueError) as e:
            raise BackendError(f"{path}: cannot load checkpoint ({e})") from e
        frame_shift = configs.get("feature_config", {}).get("frame_shift_ms", 10.0) / 1000.0
        spec = spec_from_model_config(model.cfg, frame_shift_s=frame_shift)
        return cls(model, spec, num_threads=num_threads, device=device), tok

    @classmethod
    def from_bundle(cls, bundle: Any, *, num_threads: int | None = None) -> TorchBackend:
        """The torch backend of a bundle that carries its training checkpoint.

        A bundle is made of exported graphs; it can feed the torch backend only if the export
        also stored the checkpoint (a file named ``checkpoint.pt`` listed in ``files``). The
        bundle's chunk geometry and thresholds win over the checkpoint's defaults.
        """
        rel = next((p for p in bundle.manifest.files if Path(p).name == CHECKPOINT_NAME), None)
        if rel is None:
            raise BackendError(
                f"{bundle.source}: the torch backend needs the training checkpoint "
                f"({CHECKPOINT_NAME}) inside the bundle; this bundle has only exported graphs "
                "(use backend='onnxruntime', or Recognizer.from_checkpoint(path))"
            )
        backend, _ = cls.from_checkpoint(bundle.path(rel), num_threads=num_threads)
        spec = BackendSpec.from_bundle(bundle)
        if (spec.vocab_size, spec.joint_dim) != (
            backend.spec.vocab_size,
            backend.spec.joint_dim,
        ):
            raise BackendError(f"{bundle.source}: {CHECKPOINT_NAME} does not match model.json")
        backend.spec = spec
        return backend

    # -- helpers ------------------------------------------------------------------------------
    def _t(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

    @staticmethod
    def _np(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    def _durations(self, h: torch.Tensor) -> np.ndarray:
        head = self.model.joint.duration_head
        if head is None:
            return np.zeros((*h.shape[:-1], 0), dtype=np.float32)
        return self._np(head(h))

    # -- the interface ------------------------------------------------------------------------
    def init_caches(self, batch: int) -> Caches:
        return {c.name: c.zeros(batch) for c in self.spec.caches}

    @torch.inference_mode()
    def encoder(self, features: np.ndarray, caches: Caches) -> tuple[np.ndarray, Caches]:
        from edgeasr.train.model.encoder import EncoderCaches

        ins = [
            self._t(caches[n], torch.int64 if caches[n].dtype == np.int64 else torch.float32)
            for n in self._names
        ]
        try:
            frames, new = self.model.encoder.forward_chunk(
                self._t(features), EncoderCaches.from_tuple(ins)
            )
        except ValueError as e:
            raise BackendError(f"torch encoder: {e}") from e
        return self._np(frames), dict(
            zip(self._names, (self._np(t) for t in new.to_tuple()), strict=True)
        )

    @torch.inference_mode()
    def predictor(self, context: np.ndarray) -> np.ndarray:
        return self._np(self.model.predictor.step(self._t(context, torch.int64)))

    @torch.inference_mode()
    def joint_blank(
        self, e: np.ndarray, p: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        joint = self.model.joint
        h = torch.tanh(self._t(e) + self._t(p))
        blank = joint.blank_head(h).squeeze(-1)
        return self._np(h), self._np(blank), self._durations(h)

    @torch.inference_mode()
    def joint_labels(self, h: np.ndarray) -> np.ndarray:
        return self._np(torch.log_softmax(self.model.joint.label_head(self._t(h)), dim=-1))

    @torch.inference_mode()
    def iam_joint(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        joint = self.model.joint
        h = torch.tanh(self._t(frames))
        blank = joint.blank_head(h).squeeze(-1)
        labels = torch.log_softmax(joint.label_head(h), dim=-1)
        return self._np(blank), self._np(labels), self._durations(h)
