"""Tokenizer: id convention, determinism, tokens.txt, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm

from edgeasr.tokenizer import BLANK_ID, UNK_ID, Tokenizer, TokenizerError, read_tokens

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "we call it bear",
    "three two two seven",
    "she sells sea shells by the sea shore",
    "how much wood would a woodchuck chuck",
    "peter piper picked a peck of pickled peppers",
    "it's a long way to the top if you wanna rock and roll",
    "don't stop believing hold on to that feeling",
] * 5


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.train(SENTENCES, tmp_path_factory.mktemp("tok") / "bpe", vocab_size=60)


def test_id_convention(bpe: Tokenizer) -> None:
    assert bpe.vocab_size == 60
    assert bpe.blank_id == BLANK_ID == 0
    assert bpe.unk_id == UNK_ID == 1
    assert bpe.id_to_piece(0) == "<blk>"
    assert bpe.id_to_piece(1) == "<unk>"
    assert bpe.pieces()[:2] == ["<blk>", "<unk>"]


def test_encode_never_yields_blank_and_roundtrips(bpe: Tokenizer) -> None:
    for text in [*SENTENCES, "zebra quiz", "é ü ß", "x"]:
        ids = bpe.encode(text)
        assert ids, text
        assert BLANK_ID not in ids
        assert all(0 < i < bpe.vocab_size for i in ids)
    for text in SENTENCES:
        assert bpe.decode(bpe.encode(text)) == text
    assert UNK_ID in bpe.encode("é")
    assert bpe.encode_batch(["we call", "it"]) == [bpe.encode("we call"), bpe.encode("it")]


def test_decode_skips_blanks_and_checks_range(bpe: Tokenizer) -> None:
    ids = bpe.encode("we call it bear")
    with_blanks = [0, *[x for i in ids for x in (i, 0)]]
    assert bpe.decode(with_blanks) == "we call it bear"
    with pytest.raises(TokenizerError, match="out of range"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(TokenizerError, match="out of range"):
        bpe.id_to_piece(-1)


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = Tokenizer.train(SENTENCES, tmp_path / "a", vocab_size=50)
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("\n".join(SENTENCES) + "\n\n", encoding="utf-8")
    b = Tokenizer.train(text_file, tmp_path / "sub" / "b", vocab_size=50)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "sub" / "b.model").read_bytes()
    assert a.model_bytes == b.model_bytes
    vocab = (tmp_path / "a.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 50 and vocab[0].startswith("<blk>\t")


def test_unigram(tmp_path: Path) -> None:
    tok = Tokenizer.train(SENTENCES, tmp_path / "uni", vocab_size=50, model_type="unigram")
    assert tok.id_to_piece(0) == "<blk>" and tok.vocab_size == 50
    assert tok.decode(tok.encode("the lazy dog")) == "the lazy dog"


def test_tokens_txt_sherpa_format(bpe: Tokenizer, tmp_path: Path) -> None:
    out = bpe.write_tokens(tmp_path / "tokens.txt")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == bpe.vocab_size
    assert lines[0] == "<blk> 0"
    assert lines[1] == "<unk> 1"
    assert lines[5] == f"{bpe.id_to_piece(5)} 5"
    assert read_tokens(out) == dict(enumerate(bpe.pieces()))


def test_load_and_from_bytes(bpe: Tokenizer) -> None:
    assert bpe.model_path is not None
    again = Tokenizer(bpe.model_path)
    assert again.pieces() == bpe.pieces()
    from_bytes = Tokenizer.from_bytes(bpe.model_bytes)
    assert from_bytes.encode("we call it bear") == bpe.encode("we call it bear")


def test_missing_and_corrupt_model(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        Tokenizer(bad)


def test_foreign_convention_rejected(tmp_path: Path) -> None:
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(SENTENCES), model_prefix=str(tmp_path / "default"),
        vocab_size=50, num_threads=1, minloglevel=2,
    )
    with pytest.raises(TokenizerError, match="id convention"):
        Tokenizer(tmp_path / "default.model")


def test_training_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no training text"):
        Tokenizer.train(["", "  "], tmp_path / "x", vocab_size=10)
    with pytest.raises(TokenizerError, match="model_type"):
        Tokenizer.train(SENTENCES, tmp_path / "x", vocab_size=10, model_type="word")  # type: ignore[arg-type]
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.train(tmp_path / "missing.txt", tmp_path / "x", vocab_size=10)
    with pytest.raises(TokenizerError, match="sentencepiece training failed"):
        Tokenizer.train(["ab"], tmp_path / "x", vocab_size=5000)


def test_read_tokens_errors(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.txt"
    bad.write_text("<blk> 0\nbroken\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokens.txt:2"):
        read_tokens(bad)
