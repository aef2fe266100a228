"""WER/CER: crafted pairs with known S/I/D, jiwer cross-check, reports."""

from __future__ import annotations

import math
import random
import time

import jiwer
import pytest

from edgeasr.metrics import AlignOp, ErrorCounts, align, cer, format_alignment, wer


@pytest.mark.parametrize(
    ("ref", "hyp", "sid"),
    [
        ("a b c", "a b c", (0, 0, 0)),
        ("a b c", "a x c", (1, 0, 0)),
        ("a b c", "a c", (0, 0, 1)),
        ("a b c", "a b c d", (0, 1, 0)),
        ("a b c", "", (0, 0, 3)),
        ("", "a b", (0, 2, 0)),
        ("a b c d", "x a b c", (0, 1, 1)),
        ("the cat sat on the mat", "the cat sat on mat", (0, 0, 1)),
        ("the cat sat on the mat", "a cat sat on the the mat", (1, 1, 0)),
    ],
)
def test_align_counts(ref: str, hyp: str, sid: tuple[int, int, int]) -> None:
    counts, ops = align(ref.split(), hyp.split())
    assert (counts.substitutions, counts.insertions, counts.deletions) == sid
    assert counts.ref_len == len(ref.split())
    # The alignment reconstructs both sides.
    assert [o.ref for o in ops if o.ref is not None] == ref.split()
    assert [o.hyp for o in ops if o.hyp is not None] == hyp.split()
    assert sum(o.op != "=" for o in ops) == counts.errors


def test_align_ops_exact() -> None:
    _, ops = align(["a", "b", "c"], ["a", "x", "c", "d"])
    assert ops == (
        AlignOp("=", "a", "a"),
        AlignOp("S", "b", "x"),
        AlignOp("=", "c", "c"),
        AlignOp("I", None, "d"),
    )


def test_wer_corpus_and_normalization() -> None:
    refs = ["Dr. Smith has 3 cats.", "It's 5 o'clock", "hello world"]
    hyps = ["doctor smith has three cats", "its five o'clock", "hello"]
    result = wer(refs, hyps, ids=["u1", "u2", "u3"])
    # u1: exact after normalization; u2: it's->its (1 S); u3: 1 deletion.
    assert result.counts == ErrorCounts(substitutions=1, insertions=0, deletions=1, ref_len=10)
    assert result.errors == 2 and result.ref_len == 10
    assert result.rate == pytest.approx(0.2)
    assert [u.counts.errors for u in result.utterances] == [0, 1, 1]
    assert result.utterances[0].ref == "doctor smith has three cats"
    assert [u.id for u in result.worst(5)] == ["u3", "u2"]
    assert result.summary() == "WER 20.00% [2 / 10 words, 1 sub, 0 ins, 1 del, 3 utts]"
    raw = wer(refs, hyps, normalize=False)
    assert raw.errors > result.errors


def test_cer() -> None:
    result = cer(["abc de"], ["abd de"])
    assert (result.substitutions, result.insertions, result.deletions) == (1, 0, 0)
    assert result.ref_len == 6
    assert result.rate == pytest.approx(1 / 6)
    assert cer(["ab"], ["a b"]).counts == ErrorCounts(0, 1, 0, 2)


def test_empty_reference_rate() -> None:
    assert ErrorCounts().rate == 0.0
    assert math.isinf(wer([""], ["extra"]).rate)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="single string"):
        wer("abc", "abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ids"):
        wer(["a"], ["a"], ids=["x", "y"])


def test_format_alignment() -> None:
    _, ops = align(["the", "cat", "sat"], ["the", "bat", "sat", "down"])
    assert format_alignment(ops).splitlines() == [
        "REF: the CAT sat *",
        "HYP: the BAT sat DOWN",
        "         S       I",
    ]


def test_matches_jiwer_on_random_pairs() -> None:
    rng = random.Random(0)
    vocab = ["a", "b", "c", "d", "e", "f"]
    refs, hyps = [], []
    for _ in range(300):
        refs.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12))))
        hyps.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12))))
    ours = wer(refs, hyps, normalize=False)
    out = jiwer.process_words(refs, hyps)
    theirs = out.substitutions + out.insertions + out.deletions
    assert ours.errors == theirs
    assert ours.rate == pytest.approx(jiwer.wer(refs, hyps))
    assert cer(refs, hyps, normalize=False).rate == pytest.approx(jiwer.cer(refs, hyps))
    # Per utterance the edit distance agrees too.
    for ref, hyp, u in zip(refs[:50], hyps[:50], ours.utterances[:50], strict=True):
        o = jiwer.process_words(ref, hyp) if hyp else None
        if o is not None:
            assert u.counts.errors == o.substitutions + o.insertions + o.deletions


def test_unambiguous_sid_matches_jiwer() -> None:
    refs = ["the cat sat on the mat", "one two three four", "alpha beta gamma"]
    hyps = ["the cat sat on a mat today", "one three four", "alpha beta gamma delta"]
    ours = wer(refs, hyps, normalize=False)
    out = jiwer.process_words(refs, hyps)
    assert (ours.substitutions, ours.insertions, ours.deletions) == (
        out.substitutions, out.insertions, out.deletions,
    )


def test_speed_thousands_of_utterances() -> None:
    rng = random.Random(1)
    words = [f"w{i}" for i in range(50)]
    refs = [" ".join(rng.choices(words, k=20)) for _ in range(2000)]
    hyps = [" ".join(rng.choices(words, k=20)) for _ in range(2000)]
    start = time.perf_counter()
    result = wer(refs, hyps, normalize=False)
    assert time.perf_counter() - start < 5.0
    assert result.ref_len == 40000
