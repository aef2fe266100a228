"""Hotword evaluation set: sentences with rare names and terms, and a matched set without.

Contextual biasing is judged on two things: does it recover phrases the model misses (phrase
recall on the *with* set), and does it leave other speech alone (WER on the *without* set,
where nothing should change). Both sets use the same sentence templates, so the only
difference is the rare phrase; each template is filled once with a rare term (``with``) and
once with a common filler (``without``). Audio is spoken by a held-out voice (a test voice of
the default corpus split), never heard in training.

Output (``OUT/``)::

    hotwords.txt        the rare terms, one per line (``edgeasr eval --hotwords-file``)
    with.jsonl          utterances containing one rare term each
    without.jsonl       the same templates with common fillers
    audio/*.flac        16 kHz mono

Measure (needs the trained default model)::

    python -m edgeasr.train.corpus.hotword_set ~/.cache/edgeasr/hotwords
    edgeasr eval ~/.cache/edgeasr/hotwords/with.jsonl --hotwords-file .../hotwords.txt
    edgeasr eval ~/.cache/edgeasr/hotwords/without.jsonl --hotwords-file .../hotwords.txt
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edgeasr.text import normalize_text

from .augment import SR
from .presets import VoiceSplit
from .voices import Voice, synthesize

__all__ = ["FILLERS", "RARE_TERMS", "TEMPLATES", "HotwordItem", "build_hotword_set",
           "plan_items"]

# Names and technical terms a general-English model rarely sees; all speakable words.
RARE_TERMS = (
    "kubernetes", "ada lovelace", "grace hopper", "edsger dijkstra", "alan turing",
    "postgres", "nginx", "terraform", "ansible", "prometheus", "grafana", "kafka",
    "tensorflow", "pytorch", "onnx runtime", "sherpa onnx", "icefall", "conformer",
    "transducer", "srinivasa ramanujan", "emmy noether", "katherine johnson",
    "chimamanda adichie", "wole soyinka", "reykjavik", "ouagadougou", "kyrgyzstan",
    "thessaloniki", "llanfair", "quetzalcoatl", "ibuprofen", "acetaminophen",
    "levothyroxine", "metformin", "mitochondria", "photosynthesis", "dijkstra",
    "kubectl", "raspberry pi", "arduino",
)

# Common fillers of the same kinds (person / place / thing) for the matched set.
FILLERS = (
    "the manager", "my neighbor", "the teacher", "our doctor", "the new system",
    "the old server", "the city", "the village", "the medicine", "the garden",
)

TEMPLATES = (
    "please send the notes about {} before the meeting",
    "yesterday we talked about {} for almost an hour",
    "i think {} will be mentioned in the report",
    "can you tell me more about {} tomorrow",
    "the article on {} was longer than expected",
    "she asked whether {} was on the list",
    "we should look at {} again next week",
    "nobody expected {} to come up in the interview",
)


@dataclass(frozen=True)
class HotwordItem:
    """One utterance: id, text, the phrase it contains (``""`` in the without set)."""

    id: str
    text: str
    phrase: str


def plan_items(n: int, seed: int = 0) -> tuple[list[HotwordItem], list[HotwordItem]]:
    """``n`` rare-term sentences and their ``n`` matched filler sentences (deterministic)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    terms = [RARE_TERMS[i % len(RARE_TERMS)] for i in rng.permutation(max(n, len(RARE_TERMS)))]
    with_set, without = [], []
    for i in range(n):
        tpl = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        filler = FILLERS[int(rng.integers(len(FILLERS)))]
        with_set.append(HotwordItem(f"hw-{i:04d}", normalize_text(tpl.format(terms[i])),
                                    terms[i]))
        without.append(HotwordItem(f"nohw-{i:04d}", normalize_text(tpl.format(filler)), ""))
    return with_set, without


def held_out_voice() -> Voice:
    """The first test voice of the default split (never used for training)."""
    engine, name = VoiceSplit().test_voices[0].split(":", 1)
    return Voice(engine, name)


def _render(item: HotwordItem, voice: Voice, out: Path, seed: int) -> dict:
    path = out / "audio" / f"{item.id}.flac"
    if not path.exists():
        rng = np.random.default_rng([seed, zlib.crc32(item.id.encode())])
        audio, rate, _ = synthesize(voice, item.text, rng)
        audio = soxr.resample(audio, rate, SR).astype(np.float32) if rate != SR else audio
        peak = float(np.max(np.abs(audio))) or 1.0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.flac")
        sf.write(str(tmp), 0.5 * audio / peak, SR, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    info = sf.info(str(path))
    row = {"id": item.id, "audio": f"audio/{item.id}.flac", "text": item.text,
           "duration": round(info.frames / info.samplerate, 4), "speaker": voice.key,
           "voice": voice.key, "engine": voice.engine, "lang": "en"}
    if item.phrase:
        row["phrase"] = item.phrase
    return row


def build_hotword_set(out: Path, n: int = 80, voice: Voice | None = None,
                      seed: int = 0) -> dict[str, int]:
    """Synthesize both sets and the phrase list under ``out``; resumable (existing audio is
    kept). Returns the number of utterances per manifest."""
    voice = voice or held_out_voice()
    out.mkdir(parents=True, exist_ok=True)
    with_set, without = plan_items(n, seed)
    terms = sorted({it.phrase for it in with_set})
    (out / "hotwords.txt").write_text("".join(t + "\n" for t in terms), encoding="utf-8")
    counts = {}
    for name, items in (("with", with_set), ("without", without)):
        rows = [_render(it, voice, out, seed) for it in items]
        tmp = out / f".{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                               for r in rows), encoding="utf-8")
        os.replace(tmp, out / f"{name}.jsonl")
        counts[name] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeasr.train.corpus.hotword_set",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--n", type=int, default=80, help="utterances per set (default 80)")
    p.add_argument("--voice", default=None, metavar="ENGINE:NAME",
                   help="voice (default: the first held-out test voice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    voice = None
    if args.voice:
        engine, _, name = args.voice.partition(":")
        voice = Voice(engine, name)
    counts = build_hotword_set(args.out, n=args.n, voice=voice, seed=args.seed)
    print(f"{args.out}: {counts['with']} with rare terms, {counts['without']} without; "
          f"phrases in {args.out / 'hotwords.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
