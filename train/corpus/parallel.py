"""Parallel English -> Spanish text for speech translation, and manifests that carry it.

Source: the Bible in Debian's SWORD packages, World English Bible (``sword-text-web``) and
Reina-Valera 1909 (``sword-text-sparv``), aligned by verse key through ``diatheke``. A verse is
split into sentence pairs only when both sides split into the same number of sentences (then
the i-th sentences translate each other closely enough); otherwise the verse stays one pair.

Normalization: the English side gets :func:`edgeasr.text.normalize_text` (the spoken form the
voice will say, the ASR transcript); the Spanish side :func:`normalize_spanish`, a light
normalization (lower case, punctuation dropped, accents and ñ kept) that makes a small
target vocabulary and BLEU on words meaningful without pretending to a Spanish verbalizer.

How it reaches the corpus builder (no change to the builder): :func:`sentence_pool` turns the
pairs into the :class:`~edgeasr.train.corpus.sentences.SentencePool` that ``build_corpus``
accepts as ``sentences=``; the builder synthesizes the English side as usual; then
:func:`attach_translations` adds a ``translation`` field to every manifest row by looking up
its (normalized English) text. ``edgeasr-train parallel`` runs the three steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeasr.text import is_speakable, normalize_text

from .sentences import Sentence, SentencePool
from .text_sources import BIBLE_MODULE, MissingSourceError, split_sentences

__all__ = [
    "SPANISH_BIBLE_MODULE",
    "ParallelPair",
    "attach_translations",
    "normalize_spanish",
    "pair_sentences",
    "read_bible_pairs",
    "sentence_pool",
]

log = logging.getLogger(__name__)

SPANISH_BIBLE_MODULE = "spaRV1909eb"  # Reina-Valera 1909 as shipped by Debian sword-text-sparv
_VERSE = re.compile(r"^((?:[1-4] )?[A-Z][A-Za-z ]*? \d+:\d+): (.*)$")


@dataclass(frozen=True)
class ParallelPair:
    """One aligned pair: normalized English (``en``), normalized Spanish (``es``), origin key."""

    en: str
    es: str
    key: str


#: Strong's concordance numbers that Debian's Reina-Valera module leaves in its plain-text
#: output ("... él es carne <H7683>: mas ..."): markup, not words.
_STRONGS = re.compile(r"<[HG]\d+>")


def normalize_spanish(text: str) -> str:
    """Lower case, NFC, punctuation and symbols dropped, whitespace collapsed; letters with
    accents, ñ and ü kept (they distinguish words); Strong's numbers (``<H7683>``) removed.
    Digits are kept as written (the Bible text spells numbers out, so none occur in
    practice)."""
    text = unicodedata.normalize("NFC", _STRONGS.sub(" ", text)).lower()
    out = [ch if (ch.isalnum() or ch.isspace()) else " " for ch in text]
    return " ".join("".join(out).split())


def _verses(module: str, key: str) -> dict[str, str]:
    proc = subprocess.run(["diatheke", "-b", module, "-f", "plain", "-k", key],
                          capture_output=True, text=True, check=True)
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        m = _VERSE.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def pair_sentences(key: str, en_raw: str, es_raw: str) -> list[ParallelPair]:
    """Split a verse pair into sentence pairs when both sides have equally many sentences;
    normalize; drop pairs whose English is not speakable or either side is empty."""
    en_s, es_s = split_sentences(en_raw), split_sentences(es_raw)
    parts = list(zip(en_s, es_s, strict=True)) if len(en_s) == len(es_s) > 1 else [
        (en_raw, es_raw)]
    pairs = []
    for i, (e, s) in enumerate(parts):
        if not is_speakable(e):
            continue
        en, es = normalize_text(e), normalize_spanish(s)
        if en and es:
            pairs.append(ParallelPair(en, es, f"{key}#{i}" if len(parts) > 1 else key))
    return pairs


def read_bible_pairs(key: str = "Gen-Rev", limit: int | None = None) -> list[ParallelPair]:
    """English/Spanish pairs of the verses in ``key`` (a diatheke range), in Bible order."""
    for module, pkg in ((BIBLE_MODULE, "sword-text-web"), (SPANISH_BIBLE_MODULE,
                                                            "sword-text-sparv")):
        if shutil.which("diatheke") is None or not Path(
                f"/usr/share/sword/mods.d/{module}.conf").exists():
            raise MissingSourceError(f"bible ({module})", f"apt-get install -y {pkg} diatheke")
    en, es = _verses(BIBLE_MODULE, key), _verses(SPANISH_BIBLE_MODULE, key)
    pairs: list[ParallelPair] = []
    for k, text in en.items():
        if k in es:
            pairs += pair_sentences(k, text, es[k])
            if limit is not None and len(pairs) >= limit:
                return pairs[:limit]
    return pairs


def _split_of(text: str, seed: int, dev: float, test: float) -> str:
    u = int.from_bytes(hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest(),
                       "little") / 2**64
    return "dev" if u < dev else "test" if u < dev + test else "train"


def sentence_pool(pairs: Iterable[ParallelPair], seed: int = 0, min_words: int = 2,
                  max_words: int = 30, dev_fraction: float = 0.02,
                  test_fraction: float = 0.02,
                  seen_text: frozenset[str] | set[str] = frozenset()) -> SentencePool:
    """The English sides as a corpus-builder pool: length-filtered, exact duplicates dropped
    (a repeated English sentence with two translations would make an ambiguous target), split
    by a seeded hash of the text like :func:`~edgeasr.train.corpus.sentences.collect_sentences`.

    ``seen_text``: normalized sentences a stage-1 model was already trained on (for instance the
    default ASR corpus, whose text sources include the Bible). A sentence in it that hashes to
    dev or test goes to train instead, so the held-out WER and BLEU are on text no stage ever
    saw; ``pool.dropped["seen_held_out"]`` counts the moves."""
    splits: dict[str, list[Sentence]] = {"train": [], "dev": [], "test": [], "test_ood": []}
    pool = SentencePool(splits=splits)
    seen: set[str] = set()
    n = 0
    for p in pairs:
        n += 1
        if not min_words <= len(p.en.split()) <= max_words:
            pool.dropped["length"] = pool.dropped.get("length", 0) + 1
            continue
        if p.en in seen:
            pool.dropped["duplicate"] = pool.dropped.get("duplicate", 0) + 1
            continue
        seen.add(p.en)
        split = _split_of(p.en, seed, dev_fraction, test_fraction)
        if split != "train" and p.en in seen_text:
            pool.dropped["seen_held_out"] = pool.dropped.get("seen_held_out", 0) + 1
            split = "train"
        splits[split].append(Sentence(p.en, "bible_parallel", split))
    pool.raw_counts["bible_parallel"] = n
    pool.kept_counts["bible_parallel"] = len(seen)
    return pool


def attach_translations(manifest: str | os.PathLike[str], pairs: Iterable[ParallelPair],
                        out: str | os.PathLike[str] | None = None) -> tuple[int, int]:
    """Add ``translation`` (and ``translation_lang``) to each row whose ``text`` has a pair;
    rows without one are kept unchanged. Written atomically to ``out`` (default: in place).
    Returns ``(rows, rows with a translation)``."""
    table = {p.en: p.es for p in pairs}
    src = Path(manifest)
    dst = Path(out) if out is not None else src
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    hit = 0
    for r in rows:
        es = table.get(normalize_text(r.get("text", "")))
        if es:
            r["translation"] = es
            r["translation_lang"] = "es"
            hit += 1
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                           for r in rows), encoding="utf-8")
    os.replace(tmp, dst)
    return len(rows), hit


# ---------------------------------------------------------------------- CLI
NAME = "parallel"
HELP = "English->Spanish Bible pairs: synthesize the English side, add 'translation' to manifests"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="corpus folder")
    parser.add_argument("--preset", default="smoke",
                        help="corpus preset (voices, augmentation) for the synthesis")
    parser.add_argument("--key", default="Gen-Rev", help="diatheke verse range")
    parser.add_argument("--limit", type=int, default=None, help="at most this many pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--st-vocab-size", type=int, default=256,
                        help="size of the Spanish sentencepiece model written to tok-es/ "
                             "(trained on the normalized Spanish train side; 0: skip)")
    parser.add_argument("--text-only", action="store_true",
                        help="write pairs and text files only (no synthesis)")
    parser.add_argument("--seen-text", type=Path, action="append", default=[], metavar="FILE",
                        help="text a stage-1 model trained on, one sentence per line (e.g. the "
                             "ASR corpus's text/train.txt); its sentences never enter dev/test. "
                             "Repeatable")
    for split in ("train", "dev", "test"):
        parser.add_argument(f"--{split}-utts", type=int, default=None, metavar="N",
                            help=f"{split} utterances to synthesize (default: the preset's)")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    counts = {f"{k}_utts": n for k in ("train", "dev", "test")
              if (n := getattr(args, f"{k}_utts")) is not None}
    if any(n < 0 for n in counts.values()):  # checked before any work is done
        raise SystemExit(f"utterance counts must be >= 0, got {counts}")
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_bible_pairs(args.key, args.limit)
    seen: set[str] = set()
    for f in args.seen_text:
        if not f.is_file():
            raise SystemExit(f"--seen-text {f}: no such file")
        seen.update(normalize_text(line) for line in f.read_text(encoding="utf-8").splitlines())
    pool = sentence_pool(pairs, args.seed, seen_text=seen)
    table = {p.en: p.es for p in pairs}
    (out / "text").mkdir(exist_ok=True)
    with (out / "pairs.tsv").open("w", encoding="utf-8") as f:
        for p in pairs:
            f.write(f"{p.key}\t{p.en}\t{p.es}\n")
    for split, sents in pool.splits.items():
        (out / "text" / f"{split}.es.txt").write_text(
            "".join(table[s.text] + "\n" for s in sents), encoding="utf-8")
    if args.st_vocab_size:
        # Trained here, on exactly the normalize_spanish() strings the ST dataset encodes
        # (edgeasr-train tokenizer would apply the English normalizer).
        from edgeasr.tokenizer import Tokenizer

        (out / "tok-es").mkdir(exist_ok=True)
        tok = Tokenizer.train(out / "text" / "train.es.txt", out / "tok-es" / "tokenizer",
                              args.st_vocab_size)
        tok.write_tokens(out / "tok-es" / "tokens.txt")
    log.info("%d pairs, %s sentences per split, dropped/moved %s", len(pairs),
             {k: len(v) for k, v in pool.splits.items()}, pool.dropped)
    if args.text_only:
        return 0
    from .build import build_corpus
    from .presets import get_preset

    # the pool has no out-of-domain split: never plan test_ood jobs
    preset = dataclasses.replace(get_preset(args.preset), ood_utts=0, **counts)
    build_corpus(preset, out, seed=args.seed, n_jobs=args.jobs, sentences=pool)
    for manifest in sorted(out.glob("*.jsonl")):  # train, dev, test_clean, test_noisy, ...
        rows, hit = attach_translations(manifest, pairs)
        log.info("%s: %d/%d rows with a translation", manifest, hit, rows)
    return 0
