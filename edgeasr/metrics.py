"""Word and character error rates with the substitution/insertion/deletion breakdown.

Scoring normalizes both sides with :func:`edgeasr.text.normalize_text` by default, the same
function that produced the training transcripts, so formatting differences ("3" vs "three",
"Dr." vs "doctor", case, punctuation) are not counted as recognition errors.

The alignment is the standard Levenshtein one (unit costs). When several alignments have the
same cost, the backtrace prefers, from the end, a match/substitution, then a deletion, then an
insertion, as sclite and Kaldi's ``compute-wer`` do; the total error count never depends on that
choice, only the S/I/D split of tied alignments can. CER counts characters of the normalized
text, spaces included (as jiwer does).

Translation quality (:func:`translation_scores`) is sacrebleu's corpus BLEU and chrF, the
scores the speech-translation literature reports, used alike by ST training validation,
``edgeasr eval`` and the cascade baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from edgeasr.text import normalize_text

__all__ = [
    "AlignOp",
    "translation_scores",
    "ErrorCounts",
    "ErrorRate",
    "UtteranceScore",
    "align",
    "cer",
    "format_alignment",
    "score",
    "wer",
]

Op = Literal["=", "S", "I", "D"]


@dataclass(frozen=True)
class AlignOp:
    """One alignment column: ``op`` is ``=`` (hit), ``S``, ``I`` (hyp only) or ``D`` (ref only)."""

    op: Op
    ref: str | None
    hyp: str | None


@dataclass(frozen=True)
class ErrorCounts:
    """Error counts of one utterance or of a whole set."""

    substitutions: int = 0
    insertions: int = 0
    deletions: int = 0
    ref_len: int = 0

    @property
    def hits(self) -> int:
        return self.ref_len - self.substitutions - self.deletions

    @property
    def errors(self) -> int:
        return self.substitutions + self.insertions + self.deletions

    @property
    def rate(self) -> float:
        """errors / reference length; 0 for an empty reference with no errors, inf otherwise."""
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.ref_len

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.insertions + other.insertions,
            self.deletions + other.deletions,
            self.ref_len + other.ref_len,
        )


@dataclass(frozen=True)
class UtteranceScore:
    """Score of one utterance: the (normalized) texts, counts and the alignment."""

    id: str
    ref: str
    hyp: str
    counts: ErrorCounts
    alignment: tuple[AlignOp, ...]


@dataclass(frozen=True)
class ErrorRate:
    """Corpus-level result: the summed counts and the per-utterance scores."""

    unit: Literal["word", "char"]
    counts: ErrorCounts
    utterances: tuple[UtteranceScore, ...] = field(repr=False)

    @property
    def rate(self) -> float:
        return self.counts.rate

    @property
    def errors(self) -> int:
        return self.counts.errors

    @property
    def substitutions(self) -> int:
        return self.counts.substitutions

    @property
    def insertions(self) -> int:
        return self.counts.insertions

    @property
    def deletions(self) -> int:
        return self.counts.deletions

    @property
    def ref_len(self) -> int:
        return self.counts.ref_len

    def worst(self, n: int) -> list[UtteranceScore]:
        """The ``n`` utterances with the most errors (ties: higher rate, then id)."""
        ranked = sorted(self.utterances, key=lambda u: (-u.counts.errors, -u.counts.rate, u.id))
        return [u for u in ranked[:n] if u.counts.errors > 0]

    def summary(self) -> str:
        name = "WER" if self.unit == "word" else "CER"
        c = self.counts
        return (
            f"{name} {100 * c.rate:.2f}% [{c.errors} / {c.ref_len} {self.unit}s, "
            f"{c.substitutions} sub, {c.insertions} ins, {c.deletions} del, "
            f"{len(self.utterances)} utts]"
        )


def align(ref: Sequence[str], hyp: Sequence[str]) -> tuple[ErrorCounts, tuple[AlignOp, ...]]:
    """Minimum edit distance alignment of two token sequences.

    A common prefix and suffix are matched directly (always part of some optimal alignment), so
    the quadratic table covers only the differing middle: most utterances of a decent system
    differ in a few tokens, which makes scoring thousands of them fast in pure Python.
    """
    n_all, m_all = len(ref), len(hyp)
    pre = 0
    while pre < min(n_all, m_all) and ref[pre] == hyp[pre]:
        pre += 1
    suf = 0
    while suf < min(n_all, m_all) - pre and ref[n_all - 1 - suf] == hyp[m_all - 1 - suf]:
        suf += 1
    counts, middle = _align_full(ref[pre:n_all - suf], hyp[pre:m_all - suf])
    head = tuple(AlignOp("=", t, t) for t in ref[:pre])
    tail = tuple(AlignOp("=", t, t) for t in ref[n_all - suf:])
    return ErrorCounts(counts.substitutions, counts.insertions, counts.deletions, n_all), (
        head + middle + tail
    )


def _align_full(
    ref: Sequence[str], hyp: Sequence[str]
) -> tuple[ErrorCounts, tuple[AlignOp, ...]]:
    n, m = len(ref), len(hyp)
    # Integer-code tokens so the inner loop compares ints.
    vocab: dict[str, int] = {}
    r = [vocab.setdefault(t, len(vocab)) for t in ref]
    h = [vocab.setdefault(t, len(vocab)) for t in hyp]
    dist = [list(range(m + 1))]
    for i in range(1, n + 1):
        prev = dist[-1]
        row = [i] * (m + 1)
        ri = r[i - 1]
        for j in range(1, m + 1):
            diag = prev[j - 1] + (ri != h[j - 1])
            dele = prev[j] + 1
            ins = row[j - 1] + 1
            row[j] = min(diag, dele, ins)
        dist.append(row)

    ops: list[AlignOp] = []
    s = ins_n = del_n = 0
    i, j = n, m
    while i > 0 or j > 0:
        cur = dist[i][j]
        if i > 0 and j > 0 and cur == dist[i - 1][j - 1] + (r[i - 1] != h[j - 1]):
            same = r[i - 1] == h[j - 1]
            ops.append(AlignOp("=" if same else "S", ref[i - 1], hyp[j - 1]))
            s += not same
            i, j = i - 1, j - 1
        elif i > 0 and cur == dist[i - 1][j] + 1:
            ops.append(AlignOp("D", ref[i - 1], None))
            del_n += 1
            i -= 1
        else:
            ops.append(AlignOp("I", None, hyp[j - 1]))
            ins_n += 1
            j -= 1
    ops.reverse()
    return ErrorCounts(s, ins_n, del_n, n), tuple(ops)


def format_alignment(alignment: Sequence[AlignOp]) -> str:
    """Three aligned lines (REF, HYP, ops) for reports; ``*`` marks a missing token."""
    ref_row, hyp_row, op_row = ["REF:"], ["HYP:"], ["    "]
    for a in alignment:
        r = a.ref if a.ref is not None else "*"
        h = a.hyp if a.hyp is not None else "*"
        if a.op != "=":
            r, h = r.upper(), h.upper()
        w = max(len(r), len(h), 1)
        ref_row.append(r.ljust(w))
        hyp_row.append(h.ljust(w))
        op_row.append(("" if a.op == "=" else a.op).ljust(w))
    return "\n".join(" ".join(row).rstrip() for row in (ref_row, hyp_row, op_row))


def _words(text: str) -> list[str]:
    return text.split()


def _chars(text: str) -> list[str]:
    return list(" ".join(text.split()))


def score(
    refs: Sequence[str],
    hyps: Sequence[str],
    unit: Literal["word", "char"] = "word",
    ids: Sequence[str] | None = None,
    normalize: bool | Callable[[str], str] = True,
) -> ErrorRate:
    """Score paired references and hypotheses; ``normalize`` is True (normalize_text), False,
    or a callable applied to both sides."""
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError("refs and hyps must be sequences of strings, not a single string")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if ids is None:
        ids = [str(i) for i in range(len(refs))]
    elif len(ids) != len(refs):
        raise ValueError(f"{len(ids)} ids for {len(refs)} utterances")
    if normalize is True:
        norm: Callable[[str], str] = normalize_text
    elif normalize is False:
        norm = str
    else:
        norm = normalize
    split = _words if unit == "word" else _chars
    total = ErrorCounts()
    utts = []
    for uid, ref, hyp in zip(ids, refs, hyps, strict=True):
        ref_n, hyp_n = " ".join(norm(ref).split()), " ".join(norm(hyp).split())
        counts, ops = align(split(ref_n), split(hyp_n))
        total = total + counts
        utts.append(UtteranceScore(uid, ref_n, hyp_n, counts, ops))
    return ErrorRate(unit, total, tuple(utts))


def wer(
    refs: Sequence[str],
    hyps: Sequence[str],
    ids: Sequence[str] | None = None,
    normalize: bool | Callable[[str], str] = True,
) -> ErrorRate:
    """Word error rate over paired utterances (see :func:`score`)."""
    return score(refs, hyps, "word", ids, normalize)


def cer(
    refs: Sequence[str],
    hyps: Sequence[str],
    ids: Sequence[str] | None = None,
    normalize: bool | Callable[[str], str] = True,
) -> ErrorRate:
    """Character error rate over paired utterances (see :func:`score`)."""
    return score(refs, hyps, "char", ids, normalize)


def translation_scores(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default settings) plus the hypothesis/reference word
    ratio, the number the ST blank penalty is tuned on (HENT-SRT fig. 3: transducers
    under-generate translations, ratio < 1).

    sacrebleu is imported here, not at module import: ASR-only users need not install it."""
    try:
        import sacrebleu
    except ImportError:
        from edgeasr.errors import EdgeAsrError

        raise EdgeAsrError("translation scores need sacrebleu: pip install sacrebleu") from None
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    ratio = sum(len(h.split()) for h in hyps) / max(1, sum(len(r.split()) for r in refs))
    return {"bleu": float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score),
            "chrf": float(sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score),
            "length_ratio": round(ratio, 4)}
