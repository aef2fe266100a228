"""Semi-autoregressive decoding (HAINAN SAR, arXiv:2410.02597): NAR draft, then refinement.

1. Draft: NAR greedy search (:class:`~edgeasr.decoding.nar.NarGreedyDecoder`) gives the
   visited frames of the chunk (the alignment) and a token or blank on each.
2. Refine, ``steps`` times: for *every* visited frame at once, the predictor reads the draft's
   last ``context_size`` tokens before that frame, and the full (predictor-conditioned) joint
   re-predicts the frame's token, which can become blank (deletion), a token (insertion on a
   draft blank) or another token (substitution). All frames are refined in one batched
   predictor call and one batched joint call per step: the work is parallel, like NAR.
   The alignment (visited frames) stays the draft's.

Streaming: refinement runs inside each chunk, with the previous chunks' refined tokens as fixed
left context. Whole-utterance decoding of the same chunks does exactly this too, so the result
does not depend on how frames are batched into calls.
"""

from __future__ import annotations

import numpy as np

from edgeasr.backends.base import Backend
from edgeasr.decoding.base import (
    BLANK,
    DecodingError,
    Hypothesis,
    full_logprobs,
)
from edgeasr.decoding.nar import NarGreedyDecoder, NarState

__all__ = ["SarDecoder"]


class SarDecoder:
    """NAR draft plus ``steps`` parallel predictor-conditioned refinement passes per chunk."""

    def __init__(self, backend: Backend, *, steps: int = 1, blank_penalty: float = 0.0) -> None:
        if steps < 0:
            raise DecodingError(f"SAR refinement steps must be >= 0, got {steps}")
        self.backend = backend
        self.steps = steps
        self.blank_penalty = float(blank_penalty)
        self._nar = NarGreedyDecoder(backend, blank_penalty=blank_penalty)

    def init_state(self) -> NarState:
        return NarState()

    def new_segment(self, state: NarState) -> NarState:
        return self._nar.new_segment(state)

    def best(self, state: NarState) -> Hypothesis:
        return Hypothesis(tuple(state.tokens), tuple(state.token_frames))

    def finalize(self, states: list[NarState]) -> None:
        """Each chunk is final once refined."""

    def decode_chunk(self, frames: np.ndarray, states: list[NarState]) -> None:
        # the draft appends its tokens to the states; remember where they start to replace them
        keep = [(len(s.tokens), s.frame_offset) for s in states]
        prior = [list(s.tokens) for s in states]
        paths = self._nar.path(frames, states)
        drafts = [np.array([tok for _, tok in nodes], dtype=np.int64) for nodes in paths]
        rows = np.array([i for i, nodes in enumerate(paths) for _ in nodes], dtype=np.int64)
        cols = np.array([t for nodes in paths for t, _ in nodes], dtype=np.int64)
        tokens = drafts
        if rows.size:
            e = frames[rows, cols]
            for _ in range(self.steps):
                ctx = self._contexts(prior, tokens)
                p = self.backend.predictor(ctx)
                h, blank_logit, _ = self.backend.joint_blank(e, p)
                labels = self.backend.joint_labels(h)
                b = np.asarray(blank_logit, dtype=np.float32) - self.blank_penalty
                new = np.argmax(full_logprobs(b, labels), axis=-1)
                tokens = np.split(new, np.cumsum([len(d) for d in drafts])[:-1])
                for s, d in zip(states, drafts, strict=True):
                    s.stats.label_softmaxes += len(d)
        for s, (n0, offset), nodes, toks in zip(states, keep, paths, tokens, strict=True):
            del s.tokens[n0:], s.token_frames[n0:]
            for (t, _), tok in zip(nodes, toks, strict=True):
                if tok != BLANK:
                    s.tokens.append(int(tok))
                    s.token_frames.append(offset + t)

    def _contexts(self, prior: list[list[int]], tokens: list[np.ndarray]) -> np.ndarray:
        """Predictor context of every node: the last K non-blank tokens before it."""
        k = self.backend.spec.context_size
        out = []
        for before, toks in zip(prior, tokens, strict=True):
            hist = [BLANK] * k + before[-k:]
            for tok in toks:
                out.append(hist[-k:])
                if tok != BLANK:
                    hist.append(int(tok))
        return np.asarray(out, dtype=np.int64).reshape(-1, k)
