"""Runtime LM predictor of the factorized transducer (Transducer-Llama), run by llama.cpp.

The factorized decoder needs, for every hypothesis, the LM's log-probs over the ASR labels
``1..V-1`` for the next token given the hypothesis' history. The LM is the GGUF written by
``edgeasr-train lm-gguf`` (llama.cpp ``llama`` architecture, ASR vocabulary, id 0 = blank used
as BOS); llama-cpp-python runs it with a KV cache, so extending a hypothesis by one token costs
one single-token forward, not a forward over the whole history.

Per-hypothesis state: one llama.cpp context is shared; each :class:`LMState` carries a snapshot
of that context (llama's state save/load: the KV cache of its history) taken after its last
token. Extending a state restores its snapshot unless it is already the live one, evaluates the
new token at ``n_past = len(history)`` and snapshots again. Hypotheses that extend the same
parent thus never recompute the shared prefix, and greedy extension never reloads at all.

Why snapshots: they make every state an immutable value, which is what the decoders need
(beam hypotheses are copied, merged and dropped freely; streams of one recognizer share the
context), and the cost is bounded: a snapshot holds the KV cache of the history only (4 x 256
LM: 8 KB per token, ~0.34 MB at 40 tokens), and an extension costs one single-token forward
plus a restore when it branches (measured ~3 ms either way on the shared 2-core CPU). The
alternatives are worse here: re-evaluating the whole history per token is O(length) per token;
llama.cpp's multi-sequence KV cache (one ``seq_id`` per hypothesis, ``seq_cp`` to fork) needs
sequence-id bookkeeping for pruned and merged hypotheses across streams and the low-level batch
API, for a saving that only matters at beam sizes an edge device does not run.

No torch here: llama-cpp-python and numpy only (imported when a predictor is built, so the rest
of the runtime does not need llama-cpp-python installed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeasr.backends.base import BackendError

__all__ = ["BOS_ID", "LMState", "LlamaPredictor", "factorized_label_log_probs",
           "history_window", "label_log_softmax"]

BOS_ID = 0
"""The blank id starts every LM history (as the transducer's predictor input is blank-first)."""


def label_log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the labels ``1..V-1`` of ``logits[..., V]`` (blank/BOS dropped):
    ``[..., V-1]`` float32, matching the PyTorch ``Llama.label_log_probs``."""
    z = logits[..., 1:].astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(np.float32)


def history_window(tokens: tuple[int, ...], n_ctx: int) -> tuple[int, ...]:
    """The LM history to evaluate for ``tokens`` (BOS first) in a context of ``n_ctx`` tokens:
    ``tokens`` while they fit, else BOS + the last ``n_ctx // 2`` labels.

    Why: a stream that never hits an endpoint (a long file) grows its hypothesis past the LM's
    trained context. Sliding by one token would re-evaluate a full window per token; restarting
    at half the context re-evaluates ``n_ctx / 2`` tokens once every ``n_ctx / 2`` tokens (one
    extra token evaluation per token, amortized) and still leaves every prediction at least
    ``n_ctx / 2`` labels of context. Every LM predictor applies the same rule, so the llama.cpp
    and the PyTorch predictors stay interchangeable on long streams."""
    if n_ctx < 2:
        raise BackendError(f"an LM context of {n_ctx} tokens cannot hold BOS and a label")
    if len(tokens) <= n_ctx:
        return tokens
    return (BOS_ID, *tokens[len(tokens) - n_ctx // 2 :])


def factorized_label_log_probs(am_log_probs: np.ndarray, lm_log_probs: np.ndarray,
                               lm_weight: float = 1.0) -> np.ndarray:
    """The factorized transducer's label distribution (train/model/factorized.py):
    ``log_softmax(am + lm_weight * lm)`` over the labels. ``am_log_probs [..., V-1]`` are the
    ``iam_joint`` label log-probs of a frame, ``lm_log_probs [..., V-1]`` an
    :attr:`LMState.log_probs`; add ``log(1 - P(blank))`` from ``joint_blank`` for the HAT
    label scores."""
    z = am_log_probs.astype(np.float64) + lm_weight * lm_log_probs
    z = z - z.max(axis=-1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(np.float32)


@dataclass(frozen=True)
class LMState:
    """One hypothesis' LM state: its history (BOS first), the label log-probs ``[V-1]`` for the
    next token, and the llama.cpp snapshot after the last history token (opaque)."""

    tokens: tuple[int, ...]
    log_probs: np.ndarray = field(repr=False, compare=False)
    snapshot: Any = field(repr=False, compare=False)


class LlamaPredictor:
    """LM log-probs over the ASR labels for hypotheses, backed by a llama.cpp context.

    Args:
        model_path: the GGUF file.
        n_ctx: llama.cpp context in tokens (default: the model's training context); histories
            are also capped at the trained length (:attr:`n_ctx`).
        n_threads: CPU threads of llama.cpp.
        kv_f16: store the KV cache in fp16 (llama.cpp's default; halves its memory). Off by
            default: an edge LM's cache is small, and fp32 keeps the log-probs within 1e-3 of
            the PyTorch model.
    """

    def __init__(self, model_path: str | os.PathLike[str], n_ctx: int = 0,
                 n_threads: int = 1, kv_f16: bool = False) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise BackendError(f"{path}: GGUF language model not found")
        try:
            import llama_cpp
        except (ImportError, OSError) as e:  # OSError: installed without libllama
            raise BackendError(f"the Llama LM predictor needs a working llama-cpp-python "
                               f"(pip install llama-cpp-python): {e}") from e
        try:
            self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512,
                                        n_threads=n_threads, n_threads_batch=n_threads,
                                        logits_all=True, verbose=False,
                                        # GGML_TYPE_F32 = 0, F16 = 1
                                        type_k=int(kv_f16), type_v=int(kv_f16))
        except (ValueError, RuntimeError) as e:
            raise BackendError(f"{path}: llama.cpp could not load the model ({e})") from e
        self.vocab_size: int = self._llm.n_vocab()
        # llama.cpp rounds the context up (to 256); positions past the trained length are
        # extrapolation, so the usable history is capped at the model's context_length.
        trained = int(self._llm.metadata.get("llama.context_length", self._llm.n_ctx()))
        self.n_ctx: int = min(self._llm.n_ctx(), trained)
        self._live: tuple[int, ...] | None = None  # history now held by the context

    @property
    def num_labels(self) -> int:
        """``V - 1``: width of :attr:`LMState.log_probs`."""
        return self.vocab_size - 1

    def _check(self, token: int) -> None:
        if not 0 < token < self.vocab_size:
            raise BackendError(f"LM token {token} outside the labels 1..{self.vocab_size - 1}")

    def _eval(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate ``tokens`` after the live history; label log-probs at each of them."""
        n = self._llm.n_tokens
        if n + len(tokens) > self.n_ctx:
            raise BackendError(f"LM history of {n + len(tokens)} tokens exceeds n_ctx="
                               f"{self.n_ctx}")
        self._llm.eval(list(tokens))
        return label_log_softmax(np.asarray(self._llm.scores[n : n + len(tokens)]))

    def start(self) -> LMState:
        """The empty hypothesis: history ``[BOS]``."""
        self._llm.reset()
        lp = self._eval([BOS_ID])[-1]
        self._live = (BOS_ID,)
        return LMState((BOS_ID,), lp, self._llm.save_state())

    def advance(self, state: LMState, token: int) -> LMState:
        """``state`` extended by label ``token`` (its KV cache reused); a history that would
        outgrow :attr:`n_ctx` restarts from :func:`history_window` (one batched forward)."""
        self._check(token)
        tokens = history_window(state.tokens + (token,), self.n_ctx)
        if len(tokens) == len(state.tokens) + 1:
            if self._live != state.tokens:
                self._llm.load_state(state.snapshot)
            lp = self._eval([token])[-1]
        else:
            self._llm.reset()
            lp = self._eval(list(tokens))[-1]
        self._live = tokens
        return LMState(tokens, lp, self._llm.save_state())

    def advance_batch(self, states: Sequence[LMState], tokens: Sequence[int]) -> list[LMState]:
        """:meth:`advance` for each (state, token) pair (the beam decoder's expansion step)."""
        if len(states) != len(tokens):
            raise BackendError(f"{len(states)} states but {len(tokens)} tokens")
        return [self.advance(s, int(t)) for s, t in zip(states, tokens, strict=True)]

    def score(self, labels: Sequence[int]) -> np.ndarray:
        """Label log-probs ``[len(labels) + 1, V-1]`` at every position of ``[BOS] + labels``
        in one batched forward (N-best rescoring, tests)."""
        for t in labels:
            self._check(int(t))
        self._llm.reset()
        self._live = None
        return self._eval([BOS_ID, *map(int, labels)])
