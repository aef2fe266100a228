"""``edgeasr-train tokenizer --text FILE... --vocab-size 256 --out DIR``: train the BPE model.

Inputs may be JSONL manifests (their ``text`` fields are used) or plain text files (one
sentence a line). Every sentence goes through :func:`edgeasr.text.normalize_text`, the same
normalization the dataset applies to transcripts, so the tokenizer is trained on exactly the
strings it will encode. Writes ``DIR/tokenizer.model``, ``DIR/tokenizer.vocab`` and the
sherpa-onnx ``DIR/tokens.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeasr.manifest import read_manifest
from edgeasr.text import normalize_text
from edgeasr.tokenizer import Tokenizer

__all__ = ["add_arguments", "run", "read_corpus_text", "train_tokenizer"]

NAME = "tokenizer"
HELP = "train the sentencepiece tokenizer (blank=0, unk=1) from manifests or text files"


def read_corpus_text(paths: list[Path]) -> list[str]:
    """Normalized, non-empty sentences of the given manifests (``.jsonl``) or text files."""
    sentences: list[str] = []
    for p in paths:
        if p.suffix == ".jsonl":
            raw = [c.text for c in read_manifest(p)]
        else:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: text file not found")
            raw = p.read_text(encoding="utf-8").splitlines()
        sentences += [t for t in (normalize_text(s) for s in raw) if t]
    return sentences


def train_tokenizer(
    paths: list[Path], vocab_size: int, out_dir: Path, model_type: str = "bpe"
) -> Tokenizer:
    """Train on the text of ``paths``; the model is saved as ``out_dir/tokenizer.model``."""
    sentences = read_corpus_text(paths)
    tok = Tokenizer.train(sentences, out_dir / "tokenizer", vocab_size, model_type)  # type: ignore[arg-type]
    tok.write_tokens(out_dir / "tokens.txt")
    return tok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", type=Path, nargs="+", required=True,
                        help="JSONL manifests and/or plain text files (one sentence a line)")
    parser.add_argument("--vocab-size", type=int, default=256,
                        help="number of ids including blank and <unk> (default 256)")
    parser.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    tok = train_tokenizer(args.text, args.vocab_size, args.out, args.model_type)
    print(f"wrote {args.out / 'tokenizer.model'} ({tok.vocab_size} pieces)")
    return 0
