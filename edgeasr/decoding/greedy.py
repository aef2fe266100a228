"""Frame-synchronous greedy search for HAT transducers, batched over streams.

One loop serves three methods (they differ only in two switches):

- ``greedy``: plain HAT greedy search (icefall ``greedy_search_batch``): at each frame take the
  argmax over all V ids; a token updates the predictor and, up to ``max_symbols_per_frame``,
  stays on the frame; blank moves to the next frame.
- ``gated``: the same with a :class:`~edgeasr.decoding.gating.DualBlankGate`: IAM-blank frames
  are skipped, and a HAT blank above ``θ_HAT`` skips the label softmax.
- ``tdt`` (:mod:`edgeasr.decoding.tdt`): the argmax of the duration head decides how many
  frames to advance, so frames inside a jump are never evaluated. A jump past the chunk end is
  carried into the next chunk, which keeps chunked decoding equal to whole-utterance decoding.

Hotwords (:mod:`edgeasr.hotwords`): a stream with a context graph decodes twice in the same
joint calls: the plain search (the stream's own state, never biased) and a biased twin
(``GreedyState.twin``) that adds the graph's bonus to the log-probs of the tokens continuing a
phrase it has begun before the argmax, so a continuation wins over blank or another token when
its boosted score is higher. After every chunk the two are reconciled (rollback): a twin that
completed a phrase is adopted by the stream; a twin whose match broke (back at the graph root)
is reset to the plain search; a twin in the middle of a match runs on. So a broken partial match
never reaches the result, and speech without any phrase decodes exactly as without hotwords.

Factorized models (Transducer-Llama, :mod:`edgeasr.decoding.factorized`): with ``labels`` the
label distribution is the acoustic label head (``iam_joint``) combined with an LM, and every
stream carries its LM state, advanced once per emitted token; a new segment restarts the LM
history (an endpoint ends a sentence, and the LM was trained on sentences).

Every stream keeps its own time pointer, and each iteration evaluates the joint once for all
streams whose pointer is still inside the chunk (label looping), so the backend always sees
batches, whatever each stream decided.
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
    sigmoid,
)
from edgeasr.decoding.factorized import FactorizedLabels
from edgeasr.decoding.gating import DualBlankGate
from edgeasr.decoding.llama_predictor import LMState
from edgeasr.hotwords import ContextGraph, ContextState

__all__ = ["GreedyDecoder", "GreedyState"]


@dataclass
class GreedyState(DecoderState):
    """Per-stream greedy state: emitted tokens, predictor context and output, TDT carry."""

    tokens: list[int] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)
    context: list[int] = field(default_factory=list)
    p: np.ndarray | None = None
    pending_skip: int = 0  # frames of a TDT jump that fall into the next chunk
    hotwords: ContextGraph | None = None  # contextual biasing graph of this stream
    hotword_state: ContextState | None = None  # position in it (None: the root)
    lm: LMState | None = None  # LM history of a factorized model (None: HAT labels)
    biased: bool = False  # this state is a hotword twin: the bonuses apply to it
    twin: GreedyState | None = None  # the biased twin of a stream with hotwords
    phrases: int = 0  # phrases a twin completed since it was last reconciled


class GreedyDecoder:
    """Greedy (optionally gated, optionally duration-skipping) search; see the module doc."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_symbols_per_frame: int = 1,
        blank_penalty: float = 0.0,
        gate: DualBlankGate | None = None,
        use_durations: bool = False,
        labels: FactorizedLabels | None = None,
    ) -> None:
        if max_symbols_per_frame < 1:
            raise DecodingError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        if use_durations and not backend.spec.has_durations:
            raise DecodingError("duration skipping needs a TDT model (the bundle has no durations)")
        self.backend = backend
        self.max_symbols = max_symbols_per_frame
        self.blank_penalty = float(blank_penalty)
        self.gate = gate
        self.durations = (
            np.asarray(backend.spec.durations, dtype=np.int64) if use_durations else None
        )
        if labels is not None:
            labels.check(backend)
        self.labels = labels

    def init_state(self) -> GreedyState:
        return GreedyState(context=[BLANK] * self.backend.spec.context_size,
                           lm=self.labels.root() if self.labels else None)

    def new_segment(self, state: GreedyState) -> GreedyState:
        return GreedyState(
            frame_offset=state.frame_offset,
            segment_start=state.frame_offset,
            context=list(state.context),
            p=state.p,
            pending_skip=state.pending_skip,
            hotwords=state.hotwords,
            lm=self.labels.root() if self.labels else None,
        )

    def best(self, state: GreedyState) -> Hypothesis:
        return Hypothesis(tuple(state.tokens), tuple(state.token_frames))

    def finalize(self, states: list[GreedyState]) -> None:
        """Nothing is provisional in greedy search."""

    def _update_predictor(self, states: list[GreedyState]) -> None:
        """One predictor call for every state whose context changed."""
        todo = [s for s in states if s.p is None]
        if todo:
            ctx = np.asarray([s.context for s in todo], dtype=np.int64)
            p = self.backend.predictor(ctx)
            for s, row in zip(todo, p, strict=True):
                s.p = row

    def decode_chunk(self, frames: np.ndarray, states: list[GreedyState]) -> None:
        check_frames(frames, len(states), self.backend.spec.joint_dim)
        owners: list[int] = []
        for i, s in enumerate(states):
            if s.hotwords is None:
                s.twin = None
            else:
                if s.twin is None or s.twin.hotwords is not s.hotwords:
                    s.twin = GreedyState(frame_offset=s.frame_offset,
                                         segment_start=s.segment_start, hotwords=s.hotwords,
                                         biased=True)
                    _copy_path(s, s.twin)
                owners.append(i)
        if owners:  # the twins ride in the same batched calls, on the same frames
            twins = [states[i].twin for i in owners]
            self._decode_lanes(np.concatenate([frames, frames[owners]]),
                               [*states, *twins])  # type: ignore[list-item]
            for i, twin in zip(owners, twins, strict=True):
                self._reconcile(states[i], twin)  # type: ignore[arg-type]
        else:
            self._decode_lanes(frames, states)

    @staticmethod
    def _reconcile(s: GreedyState, twin: GreedyState) -> None:
        """Rollback (module doc): adopt a twin that completed a phrase, reset one whose match
        broke, leave one in the middle of a match."""
        if twin.phrases > 0:
            _copy_path(twin, s)
            twin.phrases = 0
        elif twin.hotword_state is None or twin.hotword_state is twin.hotwords.root:  # type: ignore[union-attr]
            _copy_path(s, twin)
            twin.hotword_state = None

    def _decode_lanes(self, frames: np.ndarray, states: list[GreedyState]) -> None:
        """The search proper over every state given (streams and twins alike)."""
        n, c, _ = frames.shape
        self._update_predictor(states)
        # IAM-gated frames; filled by the first round's joint call (see _joint_rows)
        skip_frame = np.zeros((n, c), dtype=bool)
        gate_frames = self.gate is not None and self.gate.gates_frames
        am = self.labels.acoustic(self.backend, frames) if self.labels else None
        t = np.array([s.pending_skip for s in states], dtype=np.int64)
        symbols = np.zeros(n, dtype=np.int64)  # tokens emitted on the current frame
        counted = np.full(n, -1, dtype=np.int64)  # last frame counted in stats.frames
        while True:
            active = [i for i in range(n) if t[i] < c]
            if not active:
                break
            # The predictor output of a stream changes only when it emits, so the joint of
            # every frame it may still visit with the current output is one batched call;
            # the walk below reads those rows until the stream emits (or leaves the chunk).
            owner, at = [], []
            for i in active:
                for u in range(int(t[i]), c):
                    if not skip_frame[i, u]:
                        owner.append(i)
                        at.append(u)
            rows = self._joint_rows(frames, states, np.asarray(owner, dtype=np.int64),
                                    np.asarray(at, dtype=np.int64), am,
                                    skip_frame if gate_frames else None)
            gate_frames = False  # the first round covered every frame a stream can visit
            emitted: list[GreedyState] = []
            for i in active:
                if self._walk(states[i], i, t, symbols, counted, skip_frame[i], rows, c):
                    emitted.append(states[i])
            if self.labels is not None and emitted:
                new = self.labels.advance([s.lm for s in emitted], [s.tokens[-1] for s in emitted])
                for s, lm in zip(emitted, new, strict=True):
                    s.lm = lm
            self._update_predictor(emitted)
        for i, s in enumerate(states):
            s.pending_skip = int(t[i] - c)
            s.frame_offset += c

    def _joint_rows(
        self,
        frames: np.ndarray,
        states: list[GreedyState],
        owner: np.ndarray,
        at: np.ndarray,
        am: np.ndarray | None,
        iam_skip: np.ndarray | None = None,
    ) -> dict[tuple[int, int], tuple[np.ndarray | None, int]]:
        """The joint of frames ``at`` of streams ``owner`` with their current predictor
        outputs, in one ``joint_blank`` and (for the rows that need it) one ``joint_labels``
        call: ``{(stream, frame): (log-probs over V, or None when blank was decided without
        the labels; duration)}``.

        ``iam_skip [N, C]``: also compute the IAM blank of those frames (the same joint with a
        zero predictor output) *in the same call*, and mark there the frames the gate drops,
        whose labels are then not computed: the gate costs no extra graph call."""
        if owner.size == 0:
            return {}
        m = owner.size
        e = frames[owner, at]
        p = np.stack([states[i].p for i in owner])
        if iam_skip is not None:
            h, raw, dur_logits = self.backend.joint_blank(
                np.concatenate([e, e]), np.concatenate([p, np.zeros_like(p)]))
            iam_skip[owner, at] = self.gate.iam_skip_logits(np.asarray(raw[m:]))
            h, raw, dur_logits = h[:m], raw[:m], dur_logits[:m]
            gated = iam_skip[owner, at]
        else:
            h, raw, dur_logits = self.backend.joint_blank(e, p)
            gated = np.zeros(m, dtype=bool)
        blank_logit = np.asarray(raw, dtype=np.float32) - self.blank_penalty
        need = (
            ~self.gate.hat_skip(sigmoid(blank_logit))
            if self.gate is not None
            else np.ones(m, dtype=bool)
        )
        if self.gate is not None:
            # a boosted token can beat blank only if log P(non-blank) + boost > log P(blank),
            # i.e. boost > blank_logit: evaluate the labels exactly there
            top = np.array([max(self._bonuses(states[i]).values(), default=-np.inf)
                            for i in owner], dtype=np.float32)
            need |= top > blank_logit
        need &= ~gated
        logp: list[np.ndarray | None] = [None] * owner.size
        if need.any():
            sel = np.flatnonzero(need)
            if self.labels is None:
                labels = self.backend.joint_labels(h[sel])
            else:
                labels = self.labels.label_log_probs(am[owner[sel], at[sel]],
                                                     [states[i].lm for i in owner[sel]])
            for k, row in zip(sel, full_logprobs(blank_logit[sel], labels), strict=True):
                logp[k] = row
        dur = (self.durations[np.argmax(dur_logits, axis=-1)] if self.durations is not None
               else np.zeros(owner.size, dtype=np.int64))
        return {(int(i), int(u)): (logp[k], int(dur[k]))
                for k, (i, u) in enumerate(zip(owner, at, strict=True))}

    @staticmethod
    def _bonuses(s: GreedyState) -> dict[int, float]:
        """``{token: bonus}`` the stream's hotwords add now: the continuations of a match the
        model began itself. At the root (no match under way) nothing is boosted: greedy search
        cannot take back a false start, and boosting every phrase's first token on every frame
        turned into insertions (the default model's WER on sentences *without* any phrase rose
        83.2 -> 89.2%, and still to 85.8% when only its own best label was boosted; with no start
        boost it stays 83.2%). Beam search, which can drop a false start, boosts starts too."""
        g = s.hotwords
        if not s.biased or g is None or s.hotword_state is None or s.hotword_state is g.root:
            return {}
        return g.bonuses(s.hotword_state)

    @classmethod
    def _biased(cls, s: GreedyState, logp: np.ndarray) -> np.ndarray:
        """``logp`` plus :meth:`_bonuses`."""
        bonuses = cls._bonuses(s)
        if not bonuses:
            return logp
        logp = logp.copy()
        for k, bonus in bonuses.items():
            if k < logp.shape[-1]:  # as the beam search: ids past V cannot be emitted
                logp[k] += bonus
        return logp

    def _walk(
        self,
        s: GreedyState,
        i: int,
        t: np.ndarray,
        symbols: np.ndarray,
        counted: np.ndarray,
        gated: np.ndarray,
        rows: dict[tuple[int, int], tuple[np.ndarray | None, int]],
        c: int,
    ) -> bool:
        """Advance stream ``i`` through its precomputed rows from ``t[i]`` until it emits a
        token (True: its predictor output is stale now) or leaves the chunk (False)."""
        while t[i] < c:
            u = int(t[i])
            if counted[i] != u:
                counted[i] = u
                s.stats.frames += 1
            if gated[u]:
                s.stats.skipped_frames += 1
                t[i] += 1
                symbols[i] = 0
                continue
            logp, dur = rows[(i, u)]
            if logp is None:
                s.stats.skipped_softmaxes += 1
                tok = BLANK
            else:
                s.stats.label_softmaxes += 1
                if s.biased:
                    logp = self._biased(s, logp)
                tok = int(np.argmax(logp))
            if tok == BLANK:
                t[i] += max(dur, 1) if self.durations is not None else 1
                symbols[i] = 0
                continue
            s.tokens.append(tok)
            s.token_frames.append(s.frame_offset + u)
            s.context = [*s.context[1:], tok]
            s.p = None
            if s.biased and s.hotwords is not None:
                g = s.hotwords
                _, s.hotword_state = g.step(s.hotword_state or g.root, tok)
                if g.matched(s.hotword_state):
                    s.phrases += 1
            symbols[i] += 1
            advance = dur if self.durations is not None else 0
            if advance == 0 and symbols[i] >= self.max_symbols:
                advance = 1
            if advance:
                t[i] += advance
                symbols[i] = 0
            return True
        return False


def _copy_path(src: GreedyState, dst: GreedyState) -> None:
    """Make ``dst`` continue from where ``src`` is: its tokens, predictor context and output,
    TDT carry and LM history (all replaced, never mutated, so sharing them is safe)."""
    dst.tokens = list(src.tokens)
    dst.token_frames = list(src.token_frames)
    dst.context = list(src.context)
    dst.p = src.p
    dst.pending_skip = src.pending_skip
    dst.lm = src.lm
