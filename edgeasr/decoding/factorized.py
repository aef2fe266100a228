"""The label half of the factorized transducer (Transducer-Llama) at run time.

A factorized model keeps the HAT blank (``joint_blank`` on the stateless predictor) but takes
its labels from a log-linear combination of the encoder's own label distribution and a
standalone LM (train/model/factorized.py)::

    log P(y | t, u) = log sigmoid(-b) + log_softmax_y(am_t(y) + lm_weight * lm_u(y))

``am_t`` is the null-predictor joint's label log-softmax (``iam_joint``, one call per chunk for
all frames), ``lm_u`` the LM's next-label log-probs for the hypothesis' history. The greedy and
the beam decoders take a :class:`FactorizedLabels` and call it where the HAT decoders call
``joint_labels``; everything else (blank, durations, gates, hotwords, beam merging) is
unchanged, so the factorized model needs no search of its own.

Each hypothesis carries the :class:`~edgeasr.decoding.llama_predictor.LMState` of its history;
a decoder advances it once per emitted token, so the LM sees every token exactly once per
hypothesis whatever the chunking (and chunked decoding equals whole-utterance decoding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from edgeasr.backends.base import Backend
from edgeasr.decoding.base import DecodingError
from edgeasr.decoding.llama_predictor import LMState, factorized_label_log_probs

__all__ = ["FactorizedLabels", "LabelLM"]


class LabelLM(Protocol):
    """An LM predictor: label log-probs ``[V-1]`` of the next token per history state.

    :class:`~edgeasr.decoding.llama_predictor.LlamaPredictor` (llama.cpp) and
    ``edgeasr.backends.torch_lm.TorchLabelLM`` (an in-memory PyTorch LM) implement it."""

    @property
    def num_labels(self) -> int: ...

    def start(self) -> LMState: ...

    def advance_batch(self, states: Sequence[LMState], tokens: Sequence[int]) -> list[LMState]:
        ...


class FactorizedLabels:
    """Factorized label scores for a decoder: acoustic part from the backend, LM part from
    ``lm``, combined with ``lm_weight`` (the weight the model was trained or tuned with)."""

    def __init__(self, lm: LabelLM, lm_weight: float = 1.0) -> None:
        if not lm_weight >= 0:
            raise DecodingError(f"lm_weight must be >= 0, got {lm_weight}")
        self.lm = lm
        self.lm_weight = float(lm_weight)
        self._root: LMState | None = None

    def check(self, backend: Backend) -> None:
        """The LM must predict exactly the model's labels (adapted to the ASR vocabulary)."""
        if self.lm.num_labels != backend.spec.num_labels:
            raise DecodingError(
                f"the LM predicts {self.lm.num_labels} labels but the model has "
                f"{backend.spec.num_labels}: use an LM adapted to this model's tokenizer"
            )

    def root(self) -> LMState:
        """The empty history (computed once; states are immutable, so it is shared)."""
        if self._root is None:
            self._root = self.lm.start()
        return self._root

    def acoustic(self, backend: Backend, frames: np.ndarray) -> np.ndarray:
        """``frames [N, C, J]`` -> acoustic label log-probs ``[N, C, V-1]`` (one call)."""
        return np.asarray(backend.iam_joint(frames)[1], dtype=np.float32)

    def label_log_probs(self, am: np.ndarray, states: Sequence[LMState]) -> np.ndarray:
        """``am [n, V-1]`` rows paired with ``states`` -> label log-probs ``[n, V-1]``."""
        if len(states) != len(am):
            raise DecodingError(f"{len(am)} acoustic rows but {len(states)} LM states")
        if not len(am):
            return np.zeros_like(am)
        lm = np.stack([s.log_probs for s in states])
        return factorized_label_log_probs(am, lm, self.lm_weight)

    def advance(self, states: Sequence[LMState], tokens: Sequence[int]) -> list[LMState]:
        """Extend each state by its token (one batched LM call)."""
        if not states:
            return []
        return self.lm.advance_batch(list(states), [int(t) for t in tokens])
