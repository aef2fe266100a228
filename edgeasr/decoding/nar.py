"""Non-autoregressive decoding with the null-predictor joint (HAINAN, arXiv:2410.02597).

With the predictor output masked to zero the joint depends on the frame only, so one
``iam_joint`` call scores every frame of a chunk and no predictor runs at all.

- :class:`NarGreedyDecoder`: HAINAN's NAR greedy search. On a TDT model: start at frame 0; at
  each visited frame emit the argmax token unless it is blank, then jump by the argmax duration
  among the durations >= 1 (a zero duration would revisit the same frame with the same
  prediction forever, so NAR excludes it). Tokens are *not* merged: the duration jump already
  moves past the frames of a token, and two equal tokens on visited frames are two tokens.
  On a model without a duration head (the IAM trained with CTC) every frame is visited and
  the CTC rule applies: merge repeats, then drop blanks.
- :class:`ViterbiDecoder`: the best path through the duration lattice. Nodes are frames
  ``0..T``; from each frame ``t`` and duration ``d >= 1`` an edge goes to ``t + d`` (clipped to
  ``T``) with score ``max_v log P(v | t) + log P(d | t)`` and label ``argmax_v``. Greedy NAR
  follows one path of this lattice, so the Viterbi score is never below it. The DP runs
  forward chunk by chunk (pending scores of nodes beyond the chunk are carried), and partial
  results trace back from the best node reached so far.
- :class:`IamCtcDecoder`: CTC greedy search on the null-predictor joint (the HAT Internal
  Acoustic Model, which training fits with CTC), on any model: every frame is visited, its
  argmax over ``[blank, labels]`` taken, repeats merged, blanks dropped. A duration head, if
  the model has one, is ignored: CTC emits at most one label per frame. This is what
  :class:`NarGreedyDecoder` already does on a model without durations; on a TDT model it
  scores the IAM itself rather than the HAINAN duration jumps.
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
    log_softmax,
)

__all__ = [
    "CtcState",
    "IamCtcDecoder",
    "NarGreedyDecoder",
    "NarState",
    "ViterbiDecoder",
    "ViterbiState",
    "ctc_collapse",
    "nar_chunk_scores",
]


def nar_chunk_scores(
    backend: Backend, frames: np.ndarray, blank_penalty: float = 0.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Null-predictor log-probs of a chunk: ``(logp[N, C, V], dur_logp[N, C, D'] or None)``.

    ``dur_logp`` covers only the durations >= 1 (renormalized), in ``spec.durations`` order
    restricted to those; it is ``None`` for a model without a duration head.
    """
    blank_logit, labels, dur_logits = backend.iam_joint(frames)
    logp = full_logprobs(np.asarray(blank_logit, dtype=np.float32) - blank_penalty, labels)
    if not backend.spec.has_durations:
        return logp, None
    keep = np.asarray(backend.spec.durations) >= 1
    return logp, log_softmax(np.asarray(dur_logits)[..., keep], axis=-1)


def _positive_durations(backend: Backend) -> np.ndarray:
    d = np.asarray(backend.spec.durations, dtype=np.int64)
    d = d[d >= 1]
    if d.size == 0:
        raise DecodingError("the model's durations contain no value >= 1; NAR cannot advance")
    return d


def ctc_collapse(best: np.ndarray, prev: int) -> tuple[np.ndarray, int]:
    """The CTC rule on one stream's per-frame argmax ``best[C]``.

    Returns the token each frame emits (``BLANK`` where it emits nothing: a blank, or a repeat
    of the frame before) and the argmax of the last frame, which the next chunk needs as its
    ``prev``. ``prev`` is the previous frame's argmax, *blank included*: "a, blank, a" is two
    tokens, "a, a" one, wherever a chunk boundary falls.
    """
    if best.size == 0:
        return best, prev
    before = np.concatenate((np.asarray([prev], dtype=best.dtype), best[:-1]))
    return np.where(best != before, best, BLANK), int(best[-1])


@dataclass
class CtcState(DecoderState):
    """Per-stream CTC greedy state: the segment's tokens and the last frame's argmax.

    ``prev`` is the argmax of the last frame decoded (blank or not), carried into the next
    chunk so that a token spanning a chunk boundary is emitted once.
    """

    tokens: list[int] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)
    prev: int = BLANK


@dataclass
class NarState(CtcState):
    """Per-stream NAR greedy state (``prev`` is used only on a model without durations)."""

    pending_skip: int = 0  # part of a duration jump that lands in the next chunk


def _record(s: CtcState, nodes: list[tuple[int, int]]) -> None:
    """Append the non-blank tokens of a chunk's visited ``(chunk frame, token)`` nodes."""
    for t, emit in nodes:
        if emit != BLANK:
            s.tokens.append(emit)
            s.token_frames.append(s.frame_offset + t)
    s.stats.frames += len(nodes)
    s.stats.label_softmaxes += len(nodes)


class NarGreedyDecoder:
    """HAINAN NAR greedy search (CTC greedy search on a model without durations)."""

    def __init__(self, backend: Backend, *, blank_penalty: float = 0.0) -> None:
        self.backend = backend
        self.blank_penalty = float(blank_penalty)
        self.durations = _positive_durations(backend) if backend.spec.has_durations else None

    def init_state(self) -> NarState:
        return NarState()

    def new_segment(self, state: NarState) -> NarState:
        return NarState(
            frame_offset=state.frame_offset,
            segment_start=state.frame_offset,
            prev=state.prev,
            pending_skip=state.pending_skip,
        )

    def best(self, state: NarState) -> Hypothesis:
        return Hypothesis(tuple(state.tokens), tuple(state.token_frames))

    def finalize(self, states: list[NarState]) -> None:
        """Nothing is provisional in greedy search."""

    def path(self, frames: np.ndarray, states: list[NarState]) -> list[list[tuple[int, int]]]:
        """Decode a chunk and return, per stream, the visited ``(chunk frame, token)`` nodes.

        Tokens of nodes are already blank where the CTC rule merged a repeat. The states are
        advanced (this is :meth:`decode_chunk`); SAR refines the returned nodes.
        """
        check_frames(frames, len(states), self.backend.spec.joint_dim)
        c = frames.shape[1]
        logp, dur_logp = nar_chunk_scores(self.backend, frames, self.blank_penalty)
        best_tok = np.argmax(logp, axis=-1)
        paths: list[list[tuple[int, int]]] = []
        for i, s in enumerate(states):
            if self.durations is None:
                emits, s.prev = ctc_collapse(best_tok[i], s.prev)
                nodes = [(t, int(e)) for t, e in enumerate(emits)]
            else:
                nodes = []
                t = s.pending_skip
                while t < c:
                    nodes.append((t, int(best_tok[i, t])))
                    t += int(self.durations[np.argmax(dur_logp[i, t])])
                s.pending_skip = t - c
            _record(s, nodes)
            s.frame_offset += c
            paths.append(nodes)
        return paths

    def decode_chunk(self, frames: np.ndarray, states: list[NarState]) -> None:
        self.path(frames, states)


@dataclass
class ViterbiState(DecoderState):
    """Forward DP over the duration lattice of the current segment.

    ``pending`` maps a node (global frame) not yet processed to its best ``(score, back)``;
    ``back`` maps processed nodes to ``(previous node, token on the edge)``.
    """

    pending: dict[int, tuple[float, tuple[int, int] | None]] = field(default_factory=dict)
    back: dict[int, tuple[int, int] | None] = field(default_factory=dict)
    final: Hypothesis | None = None


class ViterbiDecoder:
    """Best path through the HAINAN duration lattice (requires a TDT model)."""

    def __init__(self, backend: Backend, *, blank_penalty: float = 0.0) -> None:
        if not backend.spec.has_durations:
            raise DecodingError(
                "viterbi decoding needs a TDT model (durations); on a CTC-style model the best "
                "path is the greedy path: use method 'nar'"
            )
        self.backend = backend
        self.blank_penalty = float(blank_penalty)
        self.durations = _positive_durations(backend)

    def init_state(self) -> ViterbiState:
        return ViterbiState(pending={0: (0.0, None)})

    def new_segment(self, state: ViterbiState) -> ViterbiState:
        start = state.frame_offset
        return ViterbiState(frame_offset=start, segment_start=start, pending={start: (0.0, None)})

    def decode_chunk(self, frames: np.ndarray, states: list[ViterbiState]) -> None:
        check_frames(frames, len(states), self.backend.spec.joint_dim)
        _, c, _ = frames.shape
        logp, dur_logp = nar_chunk_scores(self.backend, frames, self.blank_penalty)
        tok = np.argmax(logp, axis=-1)
        tok_score = np.max(logp, axis=-1)
        for i, s in enumerate(states):
            if s.final is not None:
                raise DecodingError("decode_chunk() after finalize(); start a new segment")
            for t in range(c):
                node = s.frame_offset + t
                entry = s.pending.pop(node, None)
                if entry is None:
                    continue  # unreachable node (jumped over by every path)
                score, back = entry
                s.back[node] = back
                s.stats.frames += 1
                s.stats.label_softmaxes += 1
                edge_tok = int(tok[i, t])
                for k, d in enumerate(self.durations):
                    target = node + int(d)
                    cand = score + float(tok_score[i, t]) + float(dur_logp[i, t, k])
                    old = s.pending.get(target)
                    if old is None or cand > old[0]:
                        s.pending[target] = (cand, (node, edge_tok))
            s.frame_offset += c

    def _trace(self, s: ViterbiState, end_back: tuple[int, int] | None, score: float) -> Hypothesis:
        tokens: list[int] = []
        frames: list[int] = []
        link = end_back
        while link is not None:
            node, token = link
            if token != BLANK:
                tokens.append(token)
                frames.append(node)
            link = s.back[node]
        return Hypothesis(tuple(reversed(tokens)), tuple(reversed(frames)), score)

    def _best_end(self, s: ViterbiState) -> Hypothesis:
        """Best path ending at or past the last frame seen (jumps past the end are clipped)."""
        ends = [(score, node, back) for node, (score, back) in s.pending.items()]
        if not ends:
            return Hypothesis()
        score, _, back = max(ends, key=lambda x: (x[0], -x[1]))
        return self._trace(s, back, score)

    def best(self, state: ViterbiState) -> Hypothesis:
        return state.final if state.final is not None else self._best_end(state)

    def finalize(self, states: list[ViterbiState]) -> None:
        for s in states:
            if s.final is None:
                s.final = self._best_end(s)


class IamCtcDecoder:
    """CTC greedy search on the null-predictor joint (IAM), durations ignored; any model.

    One ``iam_joint`` call per chunk scores all frames of all streams; no predictor runs. The
    only state crossing a chunk boundary is the last frame's argmax (:class:`CtcState`), so
    the result does not depend on how the frames are cut into chunks.
    """

    def __init__(self, backend: Backend, *, blank_penalty: float = 0.0) -> None:
        self.backend = backend
        self.blank_penalty = float(blank_penalty)

    def init_state(self) -> CtcState:
        return CtcState()

    def new_segment(self, state: CtcState) -> CtcState:
        """Empty result; ``prev`` is kept, since the audio (and a token spanning the endpoint)
        continues."""
        return CtcState(
            frame_offset=state.frame_offset, segment_start=state.frame_offset, prev=state.prev
        )

    def best(self, state: CtcState) -> Hypothesis:
        return Hypothesis(tuple(state.tokens), tuple(state.token_frames))

    def finalize(self, states: list[CtcState]) -> None:
        """Nothing is provisional in greedy search."""

    def decode_chunk(self, frames: np.ndarray, states: list[CtcState]) -> None:
        check_frames(frames, len(states), self.backend.spec.joint_dim)
        c = frames.shape[1]
        if c == 0:
            return
        blank_logit, labels, _ = self.backend.iam_joint(frames)
        b = np.asarray(blank_logit, dtype=np.float32) - self.blank_penalty
        best_tok = np.argmax(full_logprobs(b, labels), axis=-1)
        for i, s in enumerate(states):
            emits, s.prev = ctc_collapse(best_tok[i], s.prev)
            _record(s, [(t, int(e)) for t, e in enumerate(emits)])
            s.frame_offset += c
