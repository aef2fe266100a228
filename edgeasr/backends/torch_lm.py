"""A label LM predictor over an in-memory PyTorch LM (the runtime ``LabelLM`` interface).

The factorized decoders (:mod:`edgeasr.decoding.factorized`) take their LM scores from any
object with ``start`` / ``advance_batch``; in deployment that is llama.cpp
(:class:`~edgeasr.decoding.llama_predictor.LlamaPredictor`). This one runs a PyTorch module with
``label_log_probs(tokens [N, U+1]) -> [N, U+1, V-1]`` (the weak ``StatelessLM`` or the ``Llama``
of ``edgeasr.train``), so the *same* search decodes a factorized checkpoint whose LM has no
GGUF (the weak LM) and produces the N-best lists of MWER training from the model being trained.

Design: no KV cache. ``advance_batch`` re-runs the LM over the full (windowed) histories of all
states in one padded forward and keeps the last position of each: the LM is causal, so right
padding never changes the kept rows. That costs O(history) per token, which is fine for the
short sentences of training and evaluation and keeps the code free of cache bookkeeping; the
history window is the llama.cpp predictor's (:func:`history_window`), so both agree on long
streams. The caller sets the module's mode (``eval()`` for deterministic scores).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeasr.backends.base import BackendError
from edgeasr.decoding.llama_predictor import BOS_ID, LMState, history_window

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the install
    raise BackendError("the PyTorch LM predictor needs PyTorch: "
                       "pip install 'edgeasr[train]'") from e

__all__ = ["TorchLabelLM"]


class TorchLabelLM:
    """``LabelLM`` over ``lm.label_log_probs``; ``n_ctx`` defaults to ``lm.cfg.max_seq_len``
    (unbounded for an LM without one, e.g. the stateless LM)."""

    def __init__(self, lm: torch.nn.Module, n_ctx: int | None = None) -> None:
        if not callable(getattr(lm, "label_log_probs", None)):
            raise BackendError(f"{type(lm).__name__} has no label_log_probs(tokens)")
        self.lm = lm
        cap = getattr(getattr(lm, "cfg", None), "max_seq_len", None)
        self.n_ctx: int = int(n_ctx or cap or 2**31 - 1)
        self._root = LMState((BOS_ID,), self._last([(BOS_ID,)])[0], None)

    @property
    def num_labels(self) -> int:
        return int(self._root.log_probs.shape[0])

    @torch.no_grad()
    def _last(self, histories: Sequence[tuple[int, ...]]) -> np.ndarray:
        """Label log-probs after the last token of each history: ``[len(histories), V-1]``."""
        param = next(self.lm.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        width = max(len(h) for h in histories)
        x = torch.full((len(histories), width), BOS_ID, dtype=torch.long, device=device)
        for i, h in enumerate(histories):
            x[i, : len(h)] = torch.tensor(h, dtype=torch.long)
        lp = self.lm.label_log_probs(x)
        last = torch.tensor([len(h) - 1 for h in histories], device=device)
        return lp[torch.arange(len(histories), device=device), last].float().cpu().numpy()

    def start(self) -> LMState:
        return self._root

    def advance(self, state: LMState, token: int) -> LMState:
        return self.advance_batch([state], [token])[0]

    def advance_batch(self, states: Sequence[LMState], tokens: Sequence[int]) -> list[LMState]:
        if len(states) != len(tokens):
            raise BackendError(f"{len(states)} states but {len(tokens)} tokens")
        if not states:
            return []
        bad = [t for t in tokens if not 0 < int(t) <= self.num_labels]
        if bad:
            raise BackendError(f"LM token {bad[0]} outside the labels 1..{self.num_labels}")
        hist = [history_window(s.tokens + (int(t),), self.n_ctx)
                for s, t in zip(states, tokens, strict=True)]
        lps = self._last(hist)
        return [LMState(h, lp, None) for h, lp in zip(hist, lps, strict=True)]
