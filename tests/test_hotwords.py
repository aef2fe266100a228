"""Contextual biasing: the context graph's exact scores (match, fail, back-off, output arcs),
phrase parsing/compiling, and biased greedy / beam decoding on the numpy toy backend."""

from __future__ import annotations

import numpy as np
import pytest
from test_decoding import ToyBackend, random_frames, run
from test_stream import SR, signal

from edgeasr.decoding import (
    DecodingConfig,
    DecodingError,
    GreedyDecoder,
    ModifiedBeamSearchDecoder,
)
from edgeasr.decoding.base import full_logprobs
from edgeasr.hotwords import (
    ContextGraph,
    Hotword,
    HotwordError,
    compile_hotwords,
    load_hotwords_file,
    parse_hotwords,
    phrase_recall,
)
from edgeasr.stream import Recognizer, RecognizerConfig, StreamError


def walk(g: ContextGraph, tokens: list[int]) -> tuple[list[float], float, list[list[int]]]:
    """Step scores, the final give-back, and the phrases matched after each token."""
    st, scores, matched = g.root, [], []
    for t in tokens:
        sc, st = g.step(st, t)
        scores.append(sc)
        matched.append(g.matched(st))
    return scores, g.finalize(st)[0], matched


# -- the graph -------------------------------------------------------------------------------
def test_full_match_commits_the_bonus() -> None:
    g = ContextGraph([[1, 2, 3]], 1.5)
    scores, back, matched = walk(g, [1, 2, 3])
    assert scores == [1.5, 1.5, 1.5] and back == 0.0
    assert matched == [[], [], [0]]


def test_failed_match_gives_back_the_partial_bonus() -> None:
    g = ContextGraph([[1, 2, 3]], 1.5)
    scores, back, _ = walk(g, [1, 2, 4])
    assert scores == [1.5, 1.5, -3.0] and back == 0.0  # 4 continues nothing: back to root
    scores, back, _ = walk(g, [1, 2])
    assert scores == [1.5, 1.5] and back == -3.0  # unfinished at the end: finalize removes it


def test_fail_arc_keeps_the_bonus_of_the_suffix_match() -> None:
    # "1 2 4": the match of [1 2 3] breaks at 4, but [2 4] continues from the suffix "2"
    g = ContextGraph([[1, 2, 3], [2, 4]], [1.0, 2.0])
    scores, back, matched = walk(g, [1, 2, 4])
    # prefix "2" scores max(1, 2) = 2 as a shared first token of [2 4]; node "1 2" holds 1+1
    assert scores == [1.0, 1.0, 2.0 + 2.0 - 2.0] and back == 0.0
    assert matched[-1] == [1]
    assert sum(scores) == pytest.approx(4.0)  # exactly the full bonus of [2 4]


def test_restart_on_the_failing_token() -> None:
    g = ContextGraph([[1, 2]], 1.0)
    scores, back, matched = walk(g, [1, 1, 2])
    assert scores == [1.0, 0.0, 1.0] and back == 0.0  # second 1 restarts: -1 + 1
    assert matched == [[], [], [0]]


def test_output_arcs_commit_nested_phrases() -> None:
    g = ContextGraph([[1, 2, 3], [2]], [1.0, 0.5])
    scores, back, matched = walk(g, [1, 2, 5])
    # at "1 2" the phrase [2] (its own node scores 0.5) ends at a suffix: the output arc
    # commits its bonus; then 5 breaks [1 2 3] and gives back the uncommitted 1 + 1
    assert scores == [1.0, 1.0 + 0.5, -2.0] and back == 0.0
    assert matched[1] == [1]
    assert sum(scores) == pytest.approx(0.5)  # only [2] was completed


def test_shared_prefix_takes_the_larger_boost() -> None:
    g = ContextGraph([[1, 2], [1, 3]], [1.0, 3.0])
    assert walk(g, [1, 2])[0] == [3.0, 1.0]
    assert walk(g, [1, 3])[0] == [3.0, 3.0]
    assert g.max_boost == 3.0


def test_continuations_list_only_tokens_that_differ_from_a_miss() -> None:
    g = ContextGraph([[1, 2, 3], [2, 4]], [1.0, 2.0])
    st = g.goto(g.goto(g.root, 1), 2)
    assert st.local_score == 2.0
    assert g.continuations(st) == {3: 1.0, 4: 2.0, 1: -1.0, 2: 0.0}
    assert g.bonuses(st) == {3: 1.0, 4: 2.0}
    assert g.bonuses(g.root) == {1: 1.0, 2: 2.0}
    assert g.step(st, 5) == (-2.0, g.root)  # an unlisted token: plain miss


def test_bad_graphs_are_rejected() -> None:
    with pytest.raises(HotwordError, match="no tokens"):
        ContextGraph([[]])
    with pytest.raises(HotwordError, match="blank"):
        ContextGraph([[0, 1]])
    with pytest.raises(HotwordError, match="boost must be > 0"):
        ContextGraph([[1]], 0.0)


# -- phrase lists ----------------------------------------------------------------------------
class LetterCodec:
    """ids 1.. <-> letters a.. (blank 0 skipped, spaces dropped): a tokenizer for the toy."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) - ord("a") + 1 for c in text if c != " "]

    def decode(self, ids) -> str:
        return "".join(chr(ord("a") + int(i) - 1) for i in ids if int(i) != 0)


def test_parse_phrases_with_boosts_and_comments(tmp_path) -> None:
    assert parse_hotwords("kubernetes, Ada Lovelace :2.5\n") == [
        Hotword("kubernetes"), Hotword("Ada Lovelace", 2.5)]
    f = tmp_path / "hw.txt"
    f.write_text("# names\nAda Lovelace: 3\nkubectl\n\n", encoding="utf-8")
    assert load_hotwords_file(f) == [Hotword("Ada Lovelace", 3.0), Hotword("kubectl")]
    with pytest.raises(HotwordError, match="boost must be > 0"):
        parse_hotwords("foo :0")
    with pytest.raises(HotwordError, match="cannot read"):
        load_hotwords_file(tmp_path / "missing.txt")


def test_compile_normalizes_tokenizes_and_merges() -> None:
    g = compile_hotwords("Dr. Cab, CAB :4, be", LetterCodec(), boost=2.0)
    assert g is not None
    # "Dr." -> "doctor": the written form is normalized like the training transcripts
    assert sorted(zip(g.texts, g.phrases, g.boosts, strict=True)) == [
        ("be", (2, 5), 2.0),
        ("cab", (3, 1, 2), 4.0),
        ("doctor cab", tuple(LetterCodec().encode("doctorcab")), 2.0),
    ]
    assert compile_hotwords("", LetterCodec()) is None
    with pytest.raises(HotwordError, match="empty after text normalization"):
        compile_hotwords(["?!"], LetterCodec())


def test_phrase_recall_counts_word_bounded_occurrences() -> None:
    r = phrase_recall(
        ["I use Kubernetes daily", "Ada Lovelace and ada lovelace", "nothing here"],
        ["i use cube daily", "ada lovelace and a love lace", "kubernetes"],
        ["kubernetes", "Ada Lovelace :2"])
    assert (r.hits, r.total, r.false_alarms) == (1, 3, 1)
    assert r.recall == pytest.approx(1 / 3)
    assert phrase_recall(["a cab"], ["a cabbage"], ["cab"]).hits == 0  # whole words only


# -- biased decoding -------------------------------------------------------------------------
def test_greedy_emits_a_continuation_exactly_when_its_boost_wins() -> None:
    be = ToyBackend()
    frames = random_frames(1, 1, seed=3)
    dec = GreedyDecoder(be)
    p = be.predictor(np.zeros((1, 2), dtype=np.int64))
    h, b, _ = be.joint_blank(frames[:, 0], p)
    logp = full_logprobs(b, be.joint_labels(h))[0]
    best = int(np.argmax(logp))
    tok = next(t for t in np.argsort(logp) if t not in (0, best))  # the least likely label
    margin = float(logp[best] - logp[tok])
    lead = next(t for t in range(1, be.spec.vocab_size) if t != tok)
    for boost, want in ((margin - 1e-3, best), (margin + 1e-3, tok)):
        st = dec.init_state()  # the biased lane (a stream's twin) on its own
        st.biased = True
        st.hotwords = g = ContextGraph([[lead, int(tok)]], boost)
        st.hotword_state = g.step(g.root, lead)[1]  # inside a match: ``lead`` was emitted
        dec._decode_lanes(frames, [st])
        first = st.tokens[0] if st.tokens else 0
        assert first == want, (boost, margin)


def test_greedy_boosts_no_phrase_start() -> None:
    """Greedy search cannot take back a false start, so a phrase whose first token the model
    never emits changes nothing, however large its boost (beam search may start it)."""
    dec = GreedyDecoder(ToyBackend())
    frames = random_frames(1, 30)
    plain = run(dec, frames)[1][0].tokens
    absent = next(t for t in range(1, 6) if t not in plain)
    st = dec.init_state()
    st.hotwords = ContextGraph([[absent, absent]], 50.0)
    dec.decode_chunk(frames, [st])
    assert dec.best(st).tokens == plain


@pytest.mark.parametrize("decoder", [GreedyDecoder, ModifiedBeamSearchDecoder])
def test_boosted_phrase_appears_where_the_plain_decode_misses_it(decoder) -> None:
    """A phrase the plain decode misses appears with biasing: for greedy, the continuation of
    a token the model emits itself (greedy boosts no start); for beam, a phrase from scratch."""
    dec = decoder(ToyBackend())
    frames = random_frames(1, 30)
    plain = run(dec, frames)[1][0].tokens
    if decoder is GreedyDecoder:
        b = next(t for t in range(1, 6) if not _contains(plain, [plain[0], t]))
        phrase, boost = [plain[0], b], 5.0
    else:
        phrase, boost = [3, 3, 3], 3.0
    assert not _contains(plain, phrase)
    st = dec.init_state()
    st.hotwords = ContextGraph([phrase], boost)
    dec.decode_chunk(frames, [st])
    dec.finalize([st])
    assert _contains(dec.best(st).tokens, phrase)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_false_start_never_changes_the_plain_result(seed) -> None:
    """A phrase the model keeps starting but can never finish (its second token is outside the
    vocabulary) fills the biased lane with false starts, yet the plain search beside it runs
    unchanged: the result is the plain decode's, whatever the boost."""
    frames = random_frames(1, 30, seed=seed)
    dec = ModifiedBeamSearchDecoder(ToyBackend())
    plain = run(dec, frames)[1][0]
    v = ToyBackend().spec.vocab_size
    st = dec.init_state()
    st.hotwords = ContextGraph([[plain.tokens[0], v + 5]], 1e3)
    dec.decode_chunk(frames, [st])
    assert any(h.hw is not None and h.hw.local_score > 0 for h in st.hyps)  # false starts kept
    dec.finalize([st])
    assert dec.best(st).tokens == plain.tokens


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_greedy_rolls_back_a_broken_match(seed) -> None:
    """Greedy's biased twin follows a boosted continuation the plain search would not take,
    but the phrase can never finish (its last token is outside the vocabulary): the twin is
    rolled back and the result is the plain decode's; the same phrase without the impossible
    tail completes and is adopted."""
    frames = random_frames(1, 30, seed=seed)
    dec = GreedyDecoder(ToyBackend())
    plain = run(dec, frames)[1][0].tokens
    v = ToyBackend().spec.vocab_size
    b = next(t for t in range(1, 6) if not _contains(plain, [plain[0], t]))
    for phrase, adopted in (([plain[0], b, v + 5], False), ([plain[0], b], True)):
        st = dec.init_state()
        st.hotwords = ContextGraph([phrase], 50.0)
        for k in range(0, 30, 4):  # chunk by chunk: reconciled after each
            dec.decode_chunk(frames[:, k : k + 4], [st])
        dec.finalize([st])
        got = dec.best(st).tokens
        assert _contains(got, [plain[0], b]) is adopted, (phrase, got)
        if not adopted:
            assert got == plain


def _contains(seq, sub) -> bool:
    seq, sub = list(seq), list(sub)
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


@pytest.mark.parametrize("decoder", [GreedyDecoder, ModifiedBeamSearchDecoder])
def test_tiny_boost_or_no_phrases_change_nothing(decoder) -> None:
    dec = decoder(ToyBackend())
    frames = random_frames(1, 30)
    plain = run(dec, frames)[1][0]
    st = dec.init_state()
    st.hotwords = ContextGraph([[4, 2]], 1e-4)  # below every decision margin of this input
    dec.decode_chunk(frames, [st])
    dec.finalize([st])
    assert dec.best(st).tokens == plain.tokens


def test_beam_finalize_gives_back_unfinished_bonus() -> None:
    dec = ModifiedBeamSearchDecoder(ToyBackend(), beam=1)
    frames = random_frames(1, 30)
    plain = run(dec, frames)[1][0]
    # a phrase the path starts on its last token and never finishes (id 99 is outside V)
    g = ContextGraph([[plain.tokens[-1], 99]], 1e-4)
    scores, back, _ = walk(g, list(plain.tokens))
    assert back == -1e-4
    st = dec.init_state()
    st.hotwords = g
    dec.decode_chunk(frames, [st])
    (biased,) = [h for h in st.hyps if h.lane == 1]  # the biased search beside the plain one
    assert biased.tokens == plain.tokens  # the bonus is too small to change the path
    # (1e-6: both lanes share one joint call, whose float32 rows may round differently)
    assert biased.score == pytest.approx(plain.score + sum(scores), abs=1e-6)
    assert biased.committed == pytest.approx(0.0, abs=1e-12)
    dec.finalize([st])
    assert biased.score == pytest.approx(plain.score + sum(scores) + back, abs=1e-6)
    # no phrase completed: the result is the plain search's
    assert dec.best(st).tokens == plain.tokens
    assert dec.best(st).score == pytest.approx(plain.score, abs=1e-6)


# -- streams ----------------------------------------------------------------------------------
def letter_rec(method: str = "greedy", **kw) -> Recognizer:
    cfg = RecognizerConfig(decoding=DecodingConfig(method=method, **kw))
    return Recognizer(ToyBackend(), LetterCodec(), config=cfg)


def decode(rec: Recognizer, streams, x: np.ndarray):
    for s in streams:
        s.accept_waveform(SR, x)
        s.input_finished()
    rec.decode_streams(streams)
    return [s.result for s in streams]


#: A phrase the plain decode of signal() misses. Greedy boosts continuations only, so its
#: phrase starts with a letter the model says anyway ("b"); beam search can start one ("a").
PHRASE = {"greedy": "ba", "beam": "ad"}


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_per_stream_hotwords_in_one_batch(method: str) -> None:
    rec = letter_rec(method)
    x = signal()
    plain = rec.transcribe(x, sample_rate=SR).text
    word = PHRASE[method]
    assert word not in plain
    a, b = rec.create_stream(hotwords=f"{word} :2"), rec.create_stream()
    ra, rb = decode(rec, [a, b], x)
    assert word in ra.text and rb.text == plain
    # the same biased stream decoded alone gives the same result: no leak across the batch
    assert decode(rec, [rec.create_stream(hotwords=[f"{word} :2"])], x)[0].text == ra.text


def test_config_default_hotwords_and_set_between_segments() -> None:
    x = signal()
    plain = letter_rec().transcribe(x, sample_rate=SR).text
    rec = letter_rec(hotwords=("ba",), hotwords_score=2.0)
    biased = rec.transcribe(x, sample_rate=SR).text
    assert "ba" in biased and biased != plain
    s = rec.create_stream()
    assert s.hotwords is rec.default_hotwords and len(s.hotwords) == 1
    s.set_hotwords(None)  # this stream opts out
    assert decode(rec, [s], x)[0].text == plain
    # change between utterances: after reset() the next segment is decoded with the new list
    s2 = rec.create_stream(hotwords="")
    s2.accept_waveform(SR, x)
    rec.decode_streams([s2])
    first = s2.result.text
    rec.reset(s2)
    s2.set_hotwords("ba :2")
    s2.accept_waveform(SR, x)
    s2.input_finished()
    rec.decode_streams([s2])
    assert "ba" not in first and "ba" in s2.result.text


def test_unsupported_method_and_bad_ids_are_clear_errors() -> None:
    with pytest.raises(DecodingError, match="cannot be biased"):
        DecodingConfig(method="nar", hotwords=("x",)).validate()
    s = letter_rec("nar").create_stream()
    with pytest.raises(StreamError, match="does not support hotwords"):
        s.set_hotwords("ab")
    with pytest.raises(StreamError, match="vocabulary size"):
        letter_rec().create_stream(hotwords="zz")  # 'z' = 26 >= V = 6


# -- command line ------------------------------------------------------------------------------
def test_cli_hotwords_in_transcribe_and_eval(tiny_bundle, tmp_path, capsys) -> None:
    import json

    import soundfile as sf

    from edgeasr.cli import main

    root = tiny_bundle().root
    wav = tmp_path / "a.wav"
    sf.write(wav, signal(), SR, subtype="FLOAT")
    hw = tmp_path / "hw.txt"
    hw.write_text("# biasing list\nbead :4\ncafe\n", encoding="utf-8")
    assert main(["transcribe", str(wav), "--bundle", str(root)]) == 0
    plain = capsys.readouterr().out.split("\t", 1)[1].strip()
    # beam search: the random model never says a word-start piece, and greedy search boosts
    # only the continuations of a phrase the model started itself
    assert main(["transcribe", str(wav), "--bundle", str(root), "--decoding", "beam"]) == 0
    plain_beam = capsys.readouterr().out.split("\t", 1)[1].strip()
    assert main(["transcribe", str(wav), "--bundle", str(root), "--hotwords-file", str(hw),
                 "--hotwords", "dead, fade :3", "--hotwords-score", "2.5",
                 "--decoding", "beam"]) == 0
    biased = capsys.readouterr().out.split("\t", 1)[1].strip()
    assert biased != plain_beam
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"id": "a", "audio": wav.name, "text": "bead dead cafe",
                             "duration": 0.0}) + "\n")
    out = tmp_path / "hyp.jsonl"
    assert main(["eval", str(m), "--bundle", str(root), "--hotwords-file", str(hw),
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    biased_line = next(ln for ln in lines if "hotwords (2): biased" in ln)
    unbiased_line = next(ln for ln in lines if "hotwords (2): unbiased" in ln)
    assert "/2)" in biased_line and "/2)" in unbiased_line  # "bead" and "cafe" said once each
    row = json.loads(out.read_text())
    assert row["hyp_unbiased"] == plain
    assert main(["transcribe", str(wav), "--bundle", str(root), "--decoding", "nar",
                 "--hotwords", "bead"]) == 2
    assert "cannot be biased" in capsys.readouterr().err

    # the hotword evaluation recipe, end to end on the tiny bundle (flite's held-out voice)
    from edgeasr.train.corpus.hotword_set import build_hotword_set
    from edgeasr.train.corpus.voices import engine_available

    if not engine_available("flite"):
        pytest.skip("flite is not installed")
    hs = tmp_path / "hwset"
    assert build_hotword_set(hs, n=2) == {"with": 2, "without": 2}
    terms = (hs / "hotwords.txt").read_text().split("\n")[:-1]
    rows = [json.loads(ln) for ln in (hs / "with.jsonl").read_text().splitlines()]
    assert [r["phrase"] for r in rows] and all(r["phrase"] in r["text"] for r in rows)
    assert sorted(r["phrase"] for r in rows) == terms
    assert main(["eval", str(hs / "with.jsonl"), "--bundle", str(root), "--hotwords-file",
                 str(hs / "hotwords.txt")]) == 0
    out = capsys.readouterr().out
    assert "hotwords (2): biased   phrase recall" in out and "/2)" in out
