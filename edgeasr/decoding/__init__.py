"""Decoding algorithms over the backend interface, and the config that picks one.

Methods (``DecodingConfig.method``):

===========  ====================================================================
``greedy``   HAT greedy search (:mod:`.greedy`); on a TDT model it takes the jumps
``gated``    greedy + IAM/HAT dual blank thresholding (:mod:`.gating`)
``tdt``      TDT greedy search with duration skipping (:mod:`.tdt`); needs durations
``nar``      HAINAN non-autoregressive greedy search (:mod:`.nar`)
``viterbi``  best path through the HAINAN duration lattice (:mod:`.nar`)
``iam-ctc``  CTC greedy search on the null-predictor joint, durations ignored (:mod:`.nar`)
``sar``      NAR draft + predictor-conditioned refinement (:mod:`.sar`)
``beam``     modified beam search, optional blank penalty (:mod:`.beam`)
===========  ====================================================================

``greedy`` and ``gated`` follow the model: on a TDT model they move by the duration head's jumps
(so ``greedy`` is ``tdt`` there, with the bundle's symbols-per-frame bound). Visiting every frame
of a TDT model is not a valid search: the model learned to jump over the frames after a token,
never to say blank on them, and a frame-by-frame search repeats tokens there ("she she she").

Predictors (``DecodingConfig.predictor``): ``stateless`` decodes the model's own HAT joint;
``llama`` decodes a factorized model (Transducer-Llama, :mod:`.factorized`): HAT blank, labels
from the acoustic label head combined with a llama.cpp LM (``DecodingConfig.lm``, a GGUF from
``edgeasr-train lm-gguf``), for the methods in :data:`LM_METHODS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgeasr.backends.base import Backend
from edgeasr.decoding.base import Decoder, DecoderState, DecodeStats, DecodingError, Hypothesis
from edgeasr.decoding.beam import ModifiedBeamSearchDecoder
from edgeasr.decoding.factorized import FactorizedLabels, LabelLM
from edgeasr.decoding.gating import DualBlankGate
from edgeasr.decoding.greedy import GreedyDecoder
from edgeasr.decoding.nar import IamCtcDecoder, NarGreedyDecoder, ViterbiDecoder
from edgeasr.decoding.sar import SarDecoder
from edgeasr.decoding.tdt import DEFAULT_TDT_MAX_SYMBOLS, TdtGreedyDecoder

__all__ = [
    "HOTWORD_METHODS",
    "LM_METHODS",
    "METHODS",
    "PREDICTORS",
    "DecodeStats",
    "Decoder",
    "DecoderState",
    "DecodingConfig",
    "DecodingError",
    "DualBlankGate",
    "FactorizedLabels",
    "GreedyDecoder",
    "Hypothesis",
    "IamCtcDecoder",
    "LabelLM",
    "ModifiedBeamSearchDecoder",
    "NarGreedyDecoder",
    "SarDecoder",
    "TdtGreedyDecoder",
    "ViterbiDecoder",
    "make_decoder",
]

METHODS = ("greedy", "gated", "tdt", "nar", "viterbi", "iam-ctc", "sar", "beam")
#: The methods that support contextual biasing (hotwords).
HOTWORD_METHODS = ("greedy", "gated", "tdt", "beam")
#: Where label scores come from: the model's joint, or a factorized model's llama.cpp LM.
PREDICTORS = ("stateless", "llama")
#: The methods that can decode a factorized model (they follow one history per hypothesis).
LM_METHODS = ("greedy", "gated", "tdt", "beam")


@dataclass
class DecodingConfig:
    """How to turn encoder frames into tokens.

    Attributes:
        method: one of :data:`METHODS`.
        max_symbols_per_frame: tokens allowed on one frame (greedy/gated/tdt); ``None`` takes
            the bundle's recommendation for greedy/gated and 4 (NeMo's default) for TDT.
        blank_penalty: subtracted from the HAT blank logit (all methods); > 0 emits more.
        iam_threshold: θ_IAM of the gate (``gated``); ``None`` takes the bundle's value.
        hat_threshold: θ_HAT of the gate (``gated``); ``None`` takes the bundle's value.
        beam_size: ``k`` for ``beam``.
        sar_steps: refinement passes for ``sar``.
        hotwords: phrases every new stream is biased towards (``greedy``, ``gated``, ``tdt``,
            ``beam``; see :mod:`edgeasr.hotwords`; a phrase may end in ``:boost``); a stream
            can replace them with ``Stream.set_hotwords``.
        hotwords_score: bonus per matched token for phrases without their own boost.
        predictor: one of :data:`PREDICTORS`; ``llama`` needs ``lm`` and a method in
            :data:`LM_METHODS`.
        lm: the GGUF language model of ``predictor="llama"``.
        lm_weight: weight of the LM log-probs in the factorized labels; use the value the
            model was trained (or tuned on dev) with.
    """

    method: str = "greedy"
    max_symbols_per_frame: int | None = None
    blank_penalty: float = 0.0
    iam_threshold: float | None = None
    hat_threshold: float | None = None
    beam_size: int = 4
    sar_steps: int = 1
    hotwords: tuple[str, ...] = field(default_factory=tuple)
    hotwords_score: float = 1.5
    predictor: str = "stateless"
    lm: str | None = None
    lm_weight: float = 1.0

    def validate(self) -> None:
        """Raise :class:`DecodingError` naming the first bad field."""
        if self.method not in METHODS:
            raise DecodingError(f"unknown decoding method {self.method!r}; choose from {METHODS}")
        if self.max_symbols_per_frame is not None and self.max_symbols_per_frame < 1:
            raise DecodingError(
                f"max_symbols_per_frame must be >= 1, got {self.max_symbols_per_frame}"
            )
        if self.blank_penalty != self.blank_penalty:  # NaN
            raise DecodingError("blank_penalty is NaN")
        for name in ("iam_threshold", "hat_threshold"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise DecodingError(f"{name} must be in (0, 1], got {v}")
        if self.beam_size < 1:
            raise DecodingError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.sar_steps < 0:
            raise DecodingError(f"sar_steps must be >= 0, got {self.sar_steps}")
        if not self.hotwords_score > 0:
            raise DecodingError(f"hotwords_score must be > 0, got {self.hotwords_score}")
        if self.hotwords and self.method not in HOTWORD_METHODS:
            raise DecodingError(
                f"hotwords need a search that follows the predictor ({HOTWORD_METHODS}); "
                f"--decoding {self.method} cannot be biased"
            )
        if self.predictor not in PREDICTORS:
            raise DecodingError(
                f"unknown predictor {self.predictor!r}; choose from {PREDICTORS}"
            )
        if self.predictor == "llama":
            if not self.lm:
                raise DecodingError("predictor 'llama' needs lm= (--lm FILE.gguf)")
            self.check_lm_method()
        if not self.lm_weight >= 0:
            raise DecodingError(f"lm_weight must be >= 0, got {self.lm_weight}")

    def check_lm_method(self) -> None:
        """Raise unless the method can decode a factorized model."""
        if self.method not in LM_METHODS:
            raise DecodingError(
                f"an LM predictor needs a search that follows one history per hypothesis "
                f"({LM_METHODS}); --decoding {self.method} has none"
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def make_decoder(backend: Backend, config: DecodingConfig, lm: LabelLM | None = None) -> Decoder:
    """Build the decoder ``config.method`` names, checking it suits the model.

    ``lm``: a label LM object (e.g. a PyTorch one, ``edgeasr.backends.torch_lm``) that makes
    the decoding factorized whatever ``config.predictor`` says; otherwise ``predictor="llama"``
    loads ``config.lm`` with llama.cpp."""
    config.validate()
    m, bp = config.method, config.blank_penalty
    labels = None
    if lm is not None or config.predictor == "llama":
        config.check_lm_method()
        if lm is None:
            from edgeasr.decoding.llama_predictor import LlamaPredictor

            lm = LlamaPredictor(config.lm)  # type: ignore[arg-type]
        labels = FactorizedLabels(lm, config.lm_weight)
    if m in ("greedy", "gated"):
        gate = None
        if m == "gated":
            gate = DualBlankGate(
                iam_threshold=config.iam_threshold or backend.spec.iam_threshold,
                hat_threshold=config.hat_threshold or backend.spec.hat_threshold,
            )
        return GreedyDecoder(
            backend,
            max_symbols_per_frame=config.max_symbols_per_frame
            or backend.spec.max_symbols_per_frame,
            blank_penalty=bp,
            gate=gate,
            use_durations=backend.spec.has_durations,
            labels=labels,
        )
    if m == "tdt":
        return TdtGreedyDecoder(
            backend,
            max_symbols_per_frame=config.max_symbols_per_frame or DEFAULT_TDT_MAX_SYMBOLS,
            blank_penalty=bp,
            labels=labels,
        )
    if m == "nar":
        return NarGreedyDecoder(backend, blank_penalty=bp)
    if m == "viterbi":
        return ViterbiDecoder(backend, blank_penalty=bp)
    if m == "iam-ctc":
        return IamCtcDecoder(backend, blank_penalty=bp)
    if m == "sar":
        return SarDecoder(backend, steps=config.sar_steps, blank_penalty=bp)
    return ModifiedBeamSearchDecoder(
        backend, beam=config.beam_size, blank_penalty=bp, labels=labels,
        max_symbols_per_frame=config.max_symbols_per_frame or DEFAULT_TDT_MAX_SYMBOLS,
    )
