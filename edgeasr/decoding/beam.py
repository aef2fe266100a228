"""Modified beam search (icefall ``modified_beam_search``), beam ``k``, and its TDT form.

At each frame every hypothesis is extended by blank (same tokens) or by one token; the ``k``
best of all extensions survive, and extensions that end with the same token sequence are merged
by adding their probabilities (log-sum-exp), as icefall does. Limiting each frame to one symbol
makes the search frame-synchronous, so all hypotheses of all streams share one predictor call
and one joint call per frame.

On a TDT model the extensions are (token or blank, duration) pairs scored with the duration
head's log-probs, as in the TDT loss: a hypothesis that jumps ``d`` frames is not extended on
the ``d - 1`` frames it jumps over (``BeamHyp.skip``), which is TDT's speed-up and what the
model was trained for; a token with duration 0 is extended again on the same frame, up to
``max_symbols_per_frame`` symbols. With ``k = 1`` this is exactly TDT greedy search, whose
argmax token and argmax duration are the best pair because the two heads are independent.

``blank_penalty`` (HENT-SRT, arXiv:2506.02157) is subtracted from the HAT blank logit before
scoring: it shifts probability mass from blank to the labels and counters the transducer's bias
towards deletions. With ``k = 1`` and no penalty the search is exactly greedy search with one
symbol per frame.

Hotwords (:mod:`edgeasr.hotwords`): the plain search runs unchanged (lane 0) and a biased
search of another ``k`` hypotheses runs beside it in the same predictor and joint calls
(lane 1). A biased hypothesis carries its own context-graph state and every extension's score
includes the graph's step score (bonus for a continued match, back-off of the uncommitted bonus
for a broken one), as in icefall/sherpa-onnx; ``finalize`` gives back the bonus of matches left
unfinished. The result is the best plain hypothesis unless a biased one that completed a phrase
scores higher, bonus included. Why two lanes: in one beam, false starts of phrases (the common
first piece of a name) carry a bonus they have not earned yet, push the right hypothesis out of
a beam of 4, and give the bonus back too late: one shared beam raised the WER of speech without
any phrase by 2.2 points at the default score (docs/hotwords.md). Now a bonus can only add a
phrase, never cost the plain search a hypothesis.

Factorized models (Transducer-Llama, :mod:`edgeasr.decoding.factorized`): with ``labels`` each
hypothesis carries its own LM state (for llama.cpp: a KV-cache snapshot of its history, see
:mod:`edgeasr.decoding.llama_predictor`) and its label scores combine the frame's acoustic label
log-probs with that state's LM log-probs. An extension by a token gets its LM state only if it
survives the top-``k`` selection and the merging, in one batched LM call per frame, so the LM
runs once per new surviving token sequence; a blank extension shares its parent's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgeasr.backends.base import Backend
from edgeasr.decoding.base import (
    BLANK,
    DecoderState,
    DecodingError,
    Hypothesis,
    check_frames,
    full_logprobs,
    log_softmax,
)
from edgeasr.decoding.factorized import FactorizedLabels
from edgeasr.decoding.llama_predictor import LMState
from edgeasr.hotwords import ContextGraph, ContextState

__all__ = ["BeamHyp", "BeamState", "ModifiedBeamSearchDecoder"]

#: The duration set of a model without a duration head: every extension moves one frame.
_ONE_FRAME = np.ones(1, dtype=np.int64)


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
    skip: int = 0  # frames of a TDT jump still to pass before the hypothesis is extended
    stay: bool = False  # emitted with duration 0: extended again on the same frame
    lane: int = 0  # 0: the plain search; 1: the hotword-biased search beside it
    bonus: float = 0.0  # context-graph score inside ``score`` (committed + pending)

    @property
    def pending(self) -> float:
        """The bonus of the unfinished match, which a broken match or ``finalize`` gives back."""
        return self.hw.local_score if self.hw is not None else 0.0

    @property
    def committed(self) -> float:
        """The bonus of completed phrases (what a broken or unfinished match keeps)."""
        return self.bonus - self.pending


@dataclass
class BeamState(DecoderState):
    """The live hypotheses of one stream (best first after every frame)."""

    hyps: list[BeamHyp] = field(default_factory=list)
    hotwords: ContextGraph | None = None  # contextual biasing graph of this stream


class ModifiedBeamSearchDecoder:
    """Frame-synchronous beam search over a batch of streams."""

    def __init__(self, backend: Backend, *, beam: int = 4, blank_penalty: float = 0.0,
                 labels: FactorizedLabels | None = None, max_symbols_per_frame: int = 4) -> None:
        if beam < 1:
            raise DecodingError(f"beam size must be >= 1, got {beam}")
        if max_symbols_per_frame < 1:
            raise DecodingError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        if labels is not None:
            labels.check(backend)
        self.backend = backend
        self.beam = beam
        self.blank_penalty = float(blank_penalty)
        self.labels = labels
        spec = backend.spec
        self.durations = np.asarray(spec.durations, dtype=np.int64) if spec.has_durations else None
        # without durations every token moves a frame (icefall's one symbol per frame)
        self.max_symbols = max_symbols_per_frame if self.durations is not None else 1

    def _root_lm(self) -> LMState | None:
        return self.labels.root() if self.labels else None

    def init_state(self) -> BeamState:
        ctx = (BLANK,) * self.backend.spec.context_size
        return BeamState(hyps=[BeamHyp((), (), 0.0, ctx, lm=self._root_lm())])

    def new_segment(self, state: BeamState) -> BeamState:
        top = _winner(state.hyps)
        return BeamState(
            frame_offset=state.frame_offset,
            segment_start=state.frame_offset,
            hyps=[BeamHyp((), (), 0.0, top.context, top.p, lm=self._root_lm(),
                          skip=top.skip)],
            hotwords=state.hotwords,
        )

    def best(self, state: BeamState) -> Hypothesis:
        top = _winner(state.hyps)
        return Hypothesis(top.tokens, top.frames, top.score)

    def finalize(self, states: list[BeamState]) -> None:
        """Remove unfinished hotword bonuses of the biased lane; the winner (see
        :func:`_winner`) goes first. Without hotwords the best hypothesis already is."""
        for s in states:
            g = s.hotwords
            if g is None:
                continue
            for h in s.hyps:
                if h.lane == 1:
                    back, h.hw = g.finalize(h.hw or g.root)
                    h.score += back
                    h.bonus += back
            top = _winner(s.hyps)
            s.hyps = [top] + [h for h in sorted(s.hyps, key=lambda h: -h.score) if h is not top]

    def _lanes(self, s: BeamState) -> None:
        """Start the biased lane when a stream has hotwords (a copy of the plain beam, at the
        graph root) and drop it when they are removed."""
        has = any(h.lane for h in s.hyps)
        if s.hotwords is not None and not has:
            s.hyps = s.hyps + [replace(h, lane=1, hw=None, bonus=0.0) for h in s.hyps
                               if h.lane == 0]
        elif s.hotwords is None and has:
            s.hyps = [h for h in s.hyps if h.lane == 0]

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
        for s in states:
            self._lanes(s)
        for t in range(c):
            done: list[list[BeamHyp]] = []
            frontier: list[list[BeamHyp]] = []
            for s in states:
                s.stats.frames += 1
                frontier.append([h for h in s.hyps if h.skip == 0])
                done.append([replace(h, skip=h.skip - 1) for h in s.hyps if h.skip > 0])
            for r in range(self.max_symbols):
                owner = np.array([i for i, f in enumerate(frontier) for _ in f], dtype=np.int64)
                if owner.size == 0:
                    break
                flat = [h for f in frontier for h in f]
                self._update_predictor(flat)
                self._update_lm(flat)
                hid, blank_logit, dur_logits = self.backend.joint_blank(
                    frames[owner, t], np.stack([h.p for h in flat]))
                if self.labels is None:
                    labels = self.backend.joint_labels(hid)
                else:
                    labels = self.labels.label_log_probs(am[owner, t], [h.lm for h in flat])
                b = np.asarray(blank_logit, dtype=np.float32) - self.blank_penalty
                logp = full_logprobs(b, labels).astype(np.float64)
                dur = (log_softmax(np.asarray(dur_logits)).astype(np.float64)
                       if self.durations is not None else np.zeros((len(flat), 1)))
                start = 0
                for i, s in enumerate(states):
                    m = len(frontier[i])
                    if m == 0:
                        continue
                    s.stats.label_softmaxes += m
                    frontier[i], done[i] = self._expand(
                        s, frontier[i], logp[start : start + m], dur[start : start + m],
                        done[i], s.frame_offset + t, last=r == self.max_symbols - 1)
                    start += m
            for s, d in zip(states, done, strict=True):
                s.hyps = [h for lane in (0, 1)
                          for h in sorted((h for h in d if h.lane == lane),
                                          key=lambda h: -h.score)[: self.beam]]
        for s in states:
            s.frame_offset += c

    def _expand(
        self, s: BeamState, hyps: list[BeamHyp], logp: np.ndarray, dur: np.ndarray,
        done: list[BeamHyp], frame: int, *, last: bool,
    ) -> tuple[list[BeamHyp], list[BeamHyp]]:
        """One extension round of a stream's hypotheses that sit on ``frame``.

        Each candidate is (token or blank, duration) scored ``score + logp + dur``. Blank and
        any token with a duration >= 1 finish the frame (into ``done``, with the rest of the
        jump as ``skip``); a token with duration 0 stays on the frame for another round
        (``frontier``) unless this is the ``last`` allowed one. The ``k`` best of the new
        candidates, the frontier and the already finished hypotheses survive; candidates with
        the same tokens and the same place are merged (log-sum-exp). Returns
        ``(frontier, done)``."""
        front: list[BeamHyp] = []
        finished: list[BeamHyp] = []
        for lane in (0, 1) if s.hotwords is not None else (0,):
            rows = [i for i, h in enumerate(hyps) if h.lane == lane]
            lane_done = [h for h in done if h.lane == lane]
            if rows:
                f, d = self._expand_lane(s.hotwords if lane else None, [hyps[i] for i in rows],
                                         logp[rows], dur[rows], lane_done, frame, last=last)
            else:
                f, d = [], lane_done
            front += f
            finished += d
        return front, finished

    def _expand_lane(
        self, g: ContextGraph | None, hyps: list[BeamHyp], logp: np.ndarray, dur: np.ndarray,
        done: list[BeamHyp], frame: int, *, last: bool,
    ) -> tuple[list[BeamHyp], list[BeamHyp]]:
        """:meth:`_expand` for the hypotheses of one lane; ``g`` is the biasing graph of the
        biased lane (None for the plain one)."""
        v = logp.shape[1]
        bonus = self._bonus(g, hyps, v) if g is not None else None
        if bonus is not None:
            logp = logp + bonus
        durs = self.durations if self.durations is not None else _ONE_FRAME
        cand = (np.array([h.score for h in hyps])[:, None, None] + logp[:, :, None]
                + dur[:, None, :]).reshape(-1)
        order = np.argsort(-cand, kind="stable")[: self.beam]
        merged: dict[tuple, BeamHyp] = {("done", h.tokens, h.skip): h for h in done}
        per_hyp = v * len(durs)
        for idx in order:
            src = hyps[idx // per_hyp]
            tok, d = divmod(int(idx % per_hyp), len(durs))
            d = int(durs[d])
            score = float(cand[idx])
            step = float(bonus[idx // per_hyp, tok]) if bonus is not None else 0.0
            if tok == BLANK:
                new = BeamHyp(src.tokens, src.frames, score, src.context, src.p, src.hw, src.lm,
                              skip=max(d, 1) - 1, lane=src.lane, bonus=src.bonus)
            else:
                ctx = (*src.context[1:], tok)
                stay = d == 0 and not last
                new = BeamHyp((*src.tokens, tok), (*src.frames, frame), score, ctx,
                              lm_from=src.lm, skip=0 if stay else max(d, 1) - 1, stay=stay,
                              lane=src.lane, bonus=src.bonus + step)
                if g is not None:
                    new.hw = g.step(src.hw or g.root, tok)[1]
            key = ("stay" if new.stay else "done", new.tokens, new.skip)
            old = merged.get(key)
            if old is None:
                merged[key] = new
            else:
                old.score = float(np.logaddexp(old.score, new.score))
                if old.lm is None and new.lm is not None:  # same history: reuse its state
                    old.lm, old.lm_from = new.lm, None
        best = sorted(merged.values(), key=lambda h: -h.score)[: self.beam]
        return [h for h in best if h.stay], [replace(h, stay=False) for h in best if not h.stay]

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


def _winner(hyps: list[BeamHyp]) -> BeamHyp:
    """The result: the best plain hypothesis, unless a biased one holding a completed phrase
    scores higher (its committed bonus included; a pending bonus does not count, so a partial
    result never shows a phrase the stream has not finished saying)."""
    best = max((h for h in hyps if h.lane == 0), key=lambda h: h.score, default=None)
    biased = [h for h in hyps if h.lane == 1 and h.committed > 0]
    if biased:
        b = max(biased, key=lambda h: h.score - h.pending)
        if best is None or b.score - b.pending > best.score:
            return b
    return best if best is not None else hyps[0]
