"""sentencepiece tokenizer bound to the project's id convention.

The convention (docs/architecture.md) is what makes a model, its ``tokens.txt`` and every
decoder agree: id 0 is the blank (piece ``<blk>``, sentencepiece's *pad* slot, so encoding text
can never produce it), id 1 is ``<unk>``, there are no BOS/EOS ids, and the vocabulary size ``V``
counts the blank. :meth:`Tokenizer.train` sets these options; loading a model checks them, so a
model trained elsewhere with other ids fails loudly instead of decoding garbage.

Training is deterministic (one thread, no input sampling or shuffling), so the same text gives a
byte-identical model, which keeps a training run reproducible end to end.

Text is encoded as given (sentencepiece normalization rule ``identity``): transcripts are already
in spoken form from :func:`edgeasr.text.normalize_text`, and an identity rule keeps
``decode(encode(text)) == text``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import sentencepiece as spm

from edgeasr.errors import EdgeAsrError

__all__ = [
    "BLANK_ID", "BLANK_PIECE", "UNK_ID", "UNK_PIECE", "Tokenizer", "TokenizerError", "read_tokens",
]

BLANK_ID = 0
BLANK_PIECE = "<blk>"
UNK_ID = 1
UNK_PIECE = "<unk>"

ModelType = Literal["bpe", "unigram"]


class TokenizerError(EdgeAsrError, ValueError):
    """A tokenizer model that is missing, unreadable, or breaks the id convention."""


class Tokenizer:
    """A loaded sentencepiece model following the edgeasr id convention."""

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise TokenizerError(f"{path}: tokenizer model not found")
        self._init_from_bytes(path.read_bytes(), str(path))
        self.model_path: Path | None = path

    @classmethod
    def from_bytes(cls, model: bytes, name: str = "<bytes>") -> Tokenizer:
        """Load a serialized model (e.g. one embedded in a bundle) without touching the disk."""
        self = cls.__new__(cls)
        self._init_from_bytes(model, name)
        self.model_path = None
        return self

    def _init_from_bytes(self, model: bytes, name: str) -> None:
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model)
        except (RuntimeError, OSError, TypeError) as e:
            raise TokenizerError(f"{name}: not a sentencepiece model ({e})") from None
        if sp.GetPieceSize() < 3:
            raise TokenizerError(f"{name}: sentencepiece model has no usable vocabulary")
        problems = []
        if sp.pad_id() != BLANK_ID or sp.IdToPiece(BLANK_ID) != BLANK_PIECE:
            problems.append(f"id {BLANK_ID} must be the pad piece {BLANK_PIECE!r} (blank)")
        if sp.unk_id() != UNK_ID:
            problems.append(f"unk_id must be {UNK_ID}, got {sp.unk_id()}")
        if sp.bos_id() != -1 or sp.eos_id() != -1:
            problems.append(f"bos/eos must be disabled, got bos={sp.bos_id()} eos={sp.eos_id()}")
        if problems:
            raise TokenizerError(
                f"{name}: sentencepiece model breaks the edgeasr id convention: "
                + "; ".join(problems)
                + " (train it with Tokenizer.train)"
            )
        self._sp = sp
        self._name = name
        self._model_bytes = model

    # ---------------------------------------------------------------- training
    @staticmethod
    def train(
        text: str | os.PathLike[str] | Iterable[str],
        model_prefix: str | os.PathLike[str],
        vocab_size: int,
        model_type: ModelType = "bpe",
        character_coverage: float = 1.0,
    ) -> Tokenizer:
        """Train a model on a text file (one sentence a line) or an iterable of sentences.

        Writes ``<model_prefix>.model`` and ``<model_prefix>.vocab`` and returns the loaded
        tokenizer. ``vocab_size`` counts the blank and ``<unk>``.
        """
        if model_type not in ("bpe", "unigram"):
            raise TokenizerError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
        if vocab_size < 3:
            raise TokenizerError(f"vocab_size must be at least 3 (blank, unk, one piece), "
                                 f"got {vocab_size}")
        if isinstance(text, (str, os.PathLike)):
            source = Path(text)
            if not source.is_file():
                raise TokenizerError(f"{source}: training text file not found")
            sentences: list[str] = source.read_text(encoding="utf-8").splitlines()
        else:
            sentences = list(text)
        sentences = [s.strip() for s in sentences if s.strip()]
        if not sentences:
            raise TokenizerError("no training text: every sentence is empty")

        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.Train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                pad_id=BLANK_ID,
                pad_piece=BLANK_PIECE,
                unk_id=UNK_ID,
                unk_piece=UNK_PIECE,
                bos_id=-1,
                eos_id=-1,
                normalization_rule_name="identity",
                # Determinism: one thread, every sentence, no shuffling.
                num_threads=1,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise TokenizerError(f"sentencepiece training failed: {e}") from None

        prefix = Path(model_prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        model_bytes = model.getvalue()
        model_path = prefix.with_name(prefix.name + ".model")
        model_path.write_bytes(model_bytes)
        tokenizer = Tokenizer(model_path)
        vocab_lines = (
            f"{tokenizer.id_to_piece(i)}\t{tokenizer._sp.GetScore(i):g}\n"
            for i in range(tokenizer.vocab_size)
        )
        prefix.with_name(prefix.name + ".vocab").write_text("".join(vocab_lines), "utf-8")
        return tokenizer

    # ---------------------------------------------------------------- use
    @property
    def vocab_size(self) -> int:
        """``V``: number of ids, the blank included."""
        return self._sp.GetPieceSize()

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def model_bytes(self) -> bytes:
        """The serialized model, for embedding in an exported bundle."""
        return self._model_bytes

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` (never the blank; unknown characters map to ``unk_id``)."""
        return self._sp.EncodeAsIds(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.EncodeAsIds(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; blanks are skipped (decoders may pass raw frame-level output)."""
        clean = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} out of range [0, {self.vocab_size})")
            if i != BLANK_ID:
                clean.append(i)
        return self._sp.DecodeIds(clean)

    def id_to_piece(self, i: int) -> str:
        if not 0 <= i < self.vocab_size:
            raise TokenizerError(f"token id {i} out of range [0, {self.vocab_size})")
        return self._sp.IdToPiece(i)

    def piece_to_id(self, piece: str) -> int:
        return self._sp.PieceToId(piece)

    def pieces(self) -> list[str]:
        """All pieces in id order (index 0 is ``<blk>``)."""
        return [self._sp.IdToPiece(i) for i in range(self.vocab_size)]

    def write_tokens(self, path: str | os.PathLike[str]) -> Path:
        """Write ``tokens.txt`` in the sherpa-onnx format: ``<piece> <id>`` a line, id order.

        sherpa-onnx reads the blank from the ``<blk>`` line and splits on the last space, so
        pieces containing whitespace cannot be represented and are rejected.
        """
        lines = []
        for i, piece in enumerate(self.pieces()):
            if not piece or any(c.isspace() for c in piece):
                raise TokenizerError(f"piece {i} ({piece!r}) contains whitespace; "
                                     "tokens.txt cannot represent it")
            lines.append(f"{piece} {i}\n")
        out = Path(path)
        out.write_text("".join(lines), encoding="utf-8")
        return out

    def __repr__(self) -> str:
        return f"Tokenizer({self._name!r}, vocab_size={self.vocab_size})"


def read_tokens(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a sherpa-onnx ``tokens.txt`` back into ``{id: piece}`` (for checks and decoding
    without sentencepiece)."""
    table: dict[int, str] = {}
    p = Path(path)
    if not p.is_file():
        raise TokenizerError(f"{p}: tokens file not found")
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        piece, sep, idx = line.rpartition(" ")
        if not sep or not idx.isdigit():
            raise TokenizerError(f"{p}:{lineno}: expected '<piece> <id>', got {line!r}")
        table[int(idx)] = piece
    return table
