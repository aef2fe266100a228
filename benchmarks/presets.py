"""Benchmark presets: which axes and sizes a run covers.

``quick`` is the everyday check (<= 5 minutes on a 2-core machine with the default model):
a few utterances, the main backends and decoders, growth up to 60 s. ``full`` is the reference
run behind the committed report: every axis, growth up to 10 minutes, more utterances.
``smoke`` exists for the tests: the same code paths on the smallest sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark run.

    Attributes:
        max_utterances: utterances of the manifest used for WER/latency (first N, in order).
        feed_seconds: audio handed to ``accept_waveform`` per call (the "microphone" period);
            the encoder runs whenever a full chunk is buffered, as in a live app.
        precisions: ORT/ExecuTorch precisions tried when the bundle has them.
        gated_thetas: θ_IAM values for the gated decoder.
        beam_size: ``k`` of the beam-search row.
        decoders: decoding methods to try (filtered by what the model supports).
        decoder_utterances: utterances per decoder row (decoders are compared on ORT fp32).
        thread_counts: ``None`` = all usable cores.
        stream_counts: batched multi-stream sizes through ``decode_streams``.
        multistream_seconds: audio per stream in the multi-stream rows.
        growth_seconds: utterance lengths (looped test audio) for RTF/RSS vs length.
        peers: run pocketsphinx / sherpa-onnx rows.
        peer_utterances: utterances per peer row.
        long_seconds: default length of ``--long`` mode when it is asked for without a value.
        long_sample_every: record latency/RSS every this many chunks in ``--long`` mode.
    """

    name: str
    max_utterances: int
    feed_seconds: float = 0.1
    precisions: tuple[str, ...] = ("fp32", "int8")
    gated_thetas: tuple[float, ...] = (0.9, 0.95, 0.99)
    beam_size: int = 4
    decoders: tuple[str, ...] = ("greedy", "gated", "tdt", "iam-ctc", "nar", "sar", "beam")
    decoder_utterances: int = 4
    thread_counts: tuple[int | None, ...] = (1, None)
    stream_counts: tuple[int, ...] = (1, 8, 32)
    multistream_seconds: float = 4.0
    growth_seconds: tuple[float, ...] = (1.0, 10.0, 60.0)
    peers: bool = True
    peer_utterances: int = 8
    long_seconds: float = 3600.0
    long_sample_every: int = 25
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "quick": Preset(name="quick", max_utterances=8, decoder_utterances=4,
                    multistream_seconds=4.0, growth_seconds=(1.0, 10.0, 60.0), peer_utterances=8),
    "full": Preset(name="full", max_utterances=100, decoder_utterances=25,
                   gated_thetas=(0.8, 0.9, 0.95, 0.98, 0.99), multistream_seconds=10.0,
                   growth_seconds=(1.0, 10.0, 60.0, 300.0, 600.0), peer_utterances=100),
    "smoke": Preset(name="smoke", max_utterances=2, decoder_utterances=1, gated_thetas=(0.95,),
                    stream_counts=(1, 2), multistream_seconds=1.0, growth_seconds=(1.0, 2.0),
                    peer_utterances=1, long_seconds=3.0, long_sample_every=2),
}


def get_preset(name: str, **overrides: Any) -> Preset:
    """The named preset with ``overrides`` applied; unknown names list the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
