"""TDT greedy search (Token-and-Duration Transducer): the duration head says how far to jump.

At each visited frame the joint gives a token (argmax over V) and a duration (argmax of the
duration head). A token is emitted and the decoder moves ``d`` frames ahead (``d = 0`` stays on
the frame, up to ``max_symbols_per_frame`` tokens); a blank moves ``max(d, 1)`` frames. Frames
jumped over are never evaluated, which is where TDT's speed comes from. The loop itself is the
shared batched frame loop of :mod:`edgeasr.decoding.greedy` with durations switched on.
"""

from __future__ import annotations

from edgeasr.backends.base import Backend
from edgeasr.decoding.factorized import FactorizedLabels
from edgeasr.decoding.gating import DualBlankGate
from edgeasr.decoding.greedy import GreedyDecoder

__all__ = ["TdtGreedyDecoder"]

#: NeMo's default bound on tokens per frame for TDT greedy search.
DEFAULT_TDT_MAX_SYMBOLS = 4


class TdtGreedyDecoder(GreedyDecoder):
    """Greedy TDT decoding; requires a model with a duration head (``spec.durations``)."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_symbols_per_frame: int = DEFAULT_TDT_MAX_SYMBOLS,
        blank_penalty: float = 0.0,
        gate: DualBlankGate | None = None,
        labels: FactorizedLabels | None = None,
    ) -> None:
        super().__init__(
            backend,
            max_symbols_per_frame=max_symbols_per_frame,
            blank_penalty=blank_penalty,
            gate=gate,
            use_durations=True,
            labels=labels,
        )
