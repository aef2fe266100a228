"""Modified beam search (icefall ``modified_beam_search``): one symbol per frame, beam ``k``.

At each frame every hypothesis is extended by blank (same tokens) or by one token; the ``k``
best of all extensions survive, and extensions that end with the same token sequence are merged
by adding their probabilities (log-sum-exp), as icefall does. Limiting each frame to one symbol
makes the search frame-synchronous, so all hypotheses of all streams share one predictor call
and one joint call per frame.

``blank_penalty`` (HENT-SRT, arXiv:2506.02157) is subtracted from the HAT blank logit before
scoring: it shifts probability mass from blank to the labels and counters the transducer's bias
towards deletions. With ``k = 1`` and no penalty the search is exactly greedy search with one
symbol per frame.

Hotwords (:mod:`edgeasr.hotwords`): each hypothesis carries its own context-graph state and
every extension's score includes the graph's step score (bonus for a continued match, back-off
of the uncommitted bonus for a broken one), as in icefall/sherpa-onnx; ``finalize`` gives back
the bonus of matches left unfinished before the final ranking.

Factorized models (Transducer-Llama, :mod:`edgeasr.decoding.factorized`): with ``labels`` each
hypothesis carries its own LM state (for llama.cpp: a KV-cache snapshot of its history, see
:mod:`edgeasr.decoding.llama_predictor`) and its label scores combine the frame's acoustic label
log-probs with that state's LM log-probs. An extension by a token gets its LM state only if it
survives the top-``k`` selection and the merging, in one batched LM call per frame, so the LM
runs once per new surviving token sequence; a blank extension shares its parent's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeasr.backends.base import Backend
from edgeasr.decoding.base import (
    BLANK,
    DecoderState,
    DecodingError,
    Hypothesis,
    check_frames,
    full_logprobs,
)
from edgeasr.decoding.factorized import FactorizedLabels
from edgeasr.decoding.llama_predictor import LMState
from edgeasr.hotwords import ContextGraph, ContextState

__all__ = ["BeamHyp", "BeamState", "ModifiedBeamSearchDecoder"]


@dataclass
class BeamHyp:
    """One hypothesis: tokens, their frames, log-probability, cached predictor output and (a
    factorized model) the LM state of ``tokens``; ``lm = None`` with ``lm_from`` set means
    "not computed yet: advance ``lm_from`` by the last token"."""

    tokens: tuple[int, ...]
    frames: tuple[int, ...]
    score: float
    context: tuple[int, ...]
    p: np.ndarray | None = None
    hw: ContextState | None = None  # context-graph state (None: the root / no hotwords)
    lm: LMState | None = None
    lm_from: LMState | None = None


@dataclass
class BeamState(DecoderState):
    """The live hypotheses of one stream (best first after every frame)."""

    hyps: list[BeamHyp] = field(default_factory=list)
    hotwords: ContextGraph | None = None  # contextual biasing graph of this stream


class ModifiedBeamSearchDecoder:
    """Frame-synchronous beam search over a batch of streams."""

    def __init__(self, backend: Backend, *, beam: int = 4, blank_penalty: float = 0.0,
                 labels: FactorizedLabels | None = None) -> None:
        if beam < 1:
            raise DecodingError(f"beam size must be >= 1, got {beam}")
        if labels is not None:
            labels.check(backend)
        self.backend = backend
        self.beam = beam
        self.blank_penalty = float(blank_penalty)
        self.labels = labels

    def _root_lm(self) -> LMState | None:
        return self.labels.root() if self.labels else None

    def init_state(self) -> BeamState:
        ctx = (BLANK,) * self.backend.spec.context_size
        return BeamState(hyps=[BeamHyp((), (), 0.0, ctx, lm=self._root_lm())])

    def new_segment(self, state: BeamState) -> BeamState:
        top = state.hyps[0]
        return BeamState(
            frame_offset=state.frame_offset,
            segment_start=state.frame_offset,
            hyps=[BeamHyp((), (), 0.0, top.context, top.p, lm=self._root_lm())],
            hotwords=state.hotwords,
        )

    def best(self, state: BeamState) -> Hypothesis:
        top = state.hyps[0]
        return Hypothesis(top.tokens, top.frames, top.score)

    def finalize(self, states: list[BeamState]) -> None:
        """Remove unfinished hotword bonuses and re-rank; without hotwords the best
        hypothesis is already first after every frame."""
        for s in states:
            g = s.hotwords
            if g is None:
                continue
            for h in s.hyps:
                back, h.hw = g.finalize(h.hw or g.root)
                h.score += back
            s.hyps.sort(key=lambda h: -h.score)

    def _update_predictor(self, hyps: list[BeamHyp]) -> None:
        todo = [h for h in hyps if h.p is None]
        if todo:
            p = self.backend.predictor(np.asarray([h.context for h in todo], dtype=np.int64))
            for h, row in zip(todo, p, strict=True):
                h.p = row

    def _update_lm(self, hyps: list[BeamHyp]) -> None:
        todo = [h for h in hyps if h.lm is None]
        if self.labels is not None and todo:
            new = self.labels.advance([h.lm_from for h in todo], [h.tokens[-1] for h in todo])
            for h, lm in zip(todo, new, strict=True):
                h.lm, h.lm_from = lm, None

    def decode_chunk(self, frames: np.ndarray, states: list[BeamState]) -> None:
        check_frames(frames, len(states), self.backend.spec.joint_dim)
        _, c, _ = frames.shape
        am = self.labels.acoustic(self.backend, frames) if self.labels else None
        self._update_predictor([h for s in states for h in s.hyps])
        for t in range(c):
            owner = np.array([i for i, s in enumerate(states) for _ in s.hyps], dtype=np.int64)
            flat = [h for s in states for h in s.hyps]
            e = frames[owner, t]
            p = np.stack([h.p for h in flat])
            hid, blank_logit, _ = self.backend.joint_blank(e, p)
            if self.labels is None:
                labels = self.backend.joint_labels(hid)
            else:
                labels = self.labels.label_log_probs(am[owner, t], [h.lm for h in flat])
            b = np.asarray(blank_logit, dtype=np.float32) - self.blank_penalty
            logp = full_logprobs(b, labels).astype(np.float64)
            start = 0
            for s in states:
                m = len(s.hyps)
                s.hyps = self._expand(s, logp[start : start + m], s.frame_offset + t)
                s.stats.frames += 1
                s.stats.label_softmaxes += m
                start += m
            self._update_predictor([h for s in states for h in s.hyps])
            self._update_lm([h for s in states for h in s.hyps])
        for s in states:
            s.frame_offset += c

    def _expand(self, s: BeamState, logp: np.ndarray, frame: int) -> list[BeamHyp]:
        """Top-``k`` one-symbol extensions of a stream's hypotheses, merged by token sequence."""
        v = logp.shape[1]
        g = s.hotwords
        if g is not None:
            logp = logp + self._bonus(g, s.hyps, v)
        cand = (np.array([h.score for h in s.hyps])[:, None] + logp).reshape(-1)
        order = np.argsort(-cand, kind="stable")[: self.beam]
        merged: dict[tuple[int, ...], BeamHyp] = {}
        for idx in order:
            src = s.hyps[idx // v]
            tok = int(idx % v)
            score = float(cand[idx])
            if tok == BLANK:
                new = BeamHyp(src.tokens, src.frames, score, src.context, src.p, src.hw, src.lm)
            else:
                ctx = (*src.context[1:], tok)
                new = BeamHyp((*src.tokens, tok), (*src.frames, frame), score, ctx,
                              lm_from=src.lm)
                if g is not None:
                    new.hw = g.step(src.hw or g.root, tok)[1]
            old = merged.get(new.tokens)
            if old is None:
                merged[new.tokens] = new
            else:
                old.score = float(np.logaddexp(old.score, new.score))
                if old.lm is None and new.lm is not None:  # same history: reuse its state
                    old.lm, old.lm_from = new.lm, None
        return sorted(merged.values(), key=lambda h: -h.score)

    @staticmethod
    def _bonus(g: ContextGraph, hyps: list[BeamHyp], v: int) -> np.ndarray:
        """``[len(hyps), V]`` context-graph step scores: 0 for blank (the state stays), the
        back-off ``-local_score`` for a token that matches nothing, the listed continuation
        scores otherwise."""
        out = np.empty((len(hyps), v), dtype=np.float64)
        for r, h in enumerate(hyps):
            st = h.hw or g.root
            out[r] = -st.local_score
            out[r, BLANK] = 0.0
            for tok, sc in g.continuations(st).items():
                if tok < v:
                    out[r, tok] = sc
        return out
