"""Named corpus sizes: smoke (tests, seconds), dev (~10 h), full (150-250 h), and dev-pico, a
train-only top-up of the dev corpus in the voices added after it (SVOX Pico).

A preset fixes everything that changes the corpus except the seed, so ``--preset dev --seed 0``
names one reproducible corpus.  Utterance counts rather than hours are configured because the
plan must be known before synthesis; at roughly 4-6 s per utterance the hours follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .augment import AugmentConfig
from .sentences import SentenceConfig

__all__ = ["CorpusPreset", "VoiceSplit", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class VoiceSplit:
    """Which voices are held out of training.

    A voice belongs to dev (test) if its key is listed, or, for espeak-ng, if both its accent and
    its variant are held out for dev (test).  Every other voice is a training voice, except
    espeak-ng voices that combine a held-out accent or variant with a training one: those are
    used nowhere, so that no held-out accent or variant is ever heard in training.
    """

    dev_voices: tuple[str, ...] = ("flite:awb",)
    test_voices: tuple[str, ...] = ("flite:rms", "festival:ked_diphone")
    dev_espeak_accents: tuple[str, ...] = ("en-029",)
    dev_espeak_variants: tuple[str, ...] = ("f5", "m7", "klatt4", "Annie", "michel")
    test_espeak_accents: tuple[str, ...] = ("en-gb-x-gbcwmd",)
    test_espeak_variants: tuple[str, ...] = ("", "f4", "m6", "klatt3", "belinda", "boris")


@dataclass(frozen=True)
class CorpusPreset:
    """Everything that defines a corpus except the seed."""

    name: str
    train_utts: int
    dev_utts: int
    test_utts: int
    ood_utts: int
    babble_utts: int  # clean utterances mixed into babble noise tracks
    sentences: SentenceConfig = field(default_factory=SentenceConfig)
    voices: VoiceSplit = field(default_factory=VoiceSplit)
    # Relative share of each engine among the utterances of a split (renormalized over the
    # engines installed and having voices in that split).
    engine_weights: tuple[tuple[str, float], ...] = (
        ("piper", 0.3), ("flite", 0.2), ("festival", 0.2), ("espeak-ng", 0.3))
    required_engines: tuple[str, ...] = ()
    train_augment: AugmentConfig = field(default_factory=AugmentConfig)
    # test_noisy: the test_clean utterances, always noisy or reverberant, a harder SNR range.
    noisy_augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        speeds=(1.0,), speed_probs=(1.0,), p_rir=0.5, p_noise=1.0, snr_db=(0.0, 20.0),
        p_telephone=0.2, gain_db=(-10.0, 0.0)))
    babble_speakers: int = 4


PRESETS: dict[str, CorpusPreset] = {
    p.name: p
    for p in (
        CorpusPreset(
            name="smoke", train_utts=40, dev_utts=6, test_utts=6, ood_utts=6, babble_utts=6,
            sentences=SentenceConfig(per_source_limit=120, max_words=14),
            # piper's model load costs seconds per worker: the smoke build stays on fast engines
            engine_weights=(("flite", 0.4), ("festival", 0.2), ("espeak-ng", 0.4)),
        ),
        CorpusPreset(
            name="dev", train_utts=10500, dev_utts=400, test_utts=400, ood_utts=300,
            babble_utts=64,
            sentences=SentenceConfig(per_source_limit=40000),
        ),
        # The dev corpus's training sentences (same sentence config and seed: its held-out
        # sentences stay held out) spoken by Pico's six voices, none of which the dev corpus
        # has; no dev/test split (the dev corpus's are the ones to measure on). Why a separate
        # preset: adding an engine to "dev" would re-draw every dev training utterance's voice,
        # so the shipped model's corpus could no longer be rebuilt.
        CorpusPreset(
            name="dev-pico", train_utts=4000, dev_utts=0, test_utts=0, ood_utts=0,
            babble_utts=32, sentences=SentenceConfig(per_source_limit=40000),
            engine_weights=(("pico", 1.0),), required_engines=("pico",),
        ),
        CorpusPreset(
            name="full", train_utts=180000, dev_utts=1500, test_utts=1500, ood_utts=1000,
            babble_utts=256,
            sentences=SentenceConfig(per_source_limit=None, dev_fraction=0.03,
                                     test_fraction=0.03),
        ),
    )
}


def get_preset(name: str) -> CorpusPreset:
    """The preset called ``name``; a ValueError lists the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown corpus preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
