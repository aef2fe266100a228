"""Synthetic speech corpus builder: English text sources x TTS voices x augmentation.

Entry points: :func:`build_corpus` (``edgeasr-train corpus synth``) and
:func:`collect_sentences` (``edgeasr-train corpus text``).  Heavy imports stay in the
submodules so ``edgeasr-train --help`` is instant.
"""

from __future__ import annotations

__all__ = ["build_corpus", "collect_sentences", "get_preset", "PRESETS"]


def __getattr__(name: str):  # noqa: ANN202 - lazy re-export
    if name == "build_corpus":
        from .build import build_corpus
        return build_corpus
    if name == "collect_sentences":
        from .sentences import collect_sentences
        return collect_sentences
    if name in ("get_preset", "PRESETS"):
        from . import presets
        return getattr(presets, name)
    raise AttributeError(name)
