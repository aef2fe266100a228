"""``edgeasr transcribe FILE...``: recognize whole files.

Bad files (missing, corrupt, unreadable) do not stop the run: each is reported, the others are
transcribed, the failures are listed at the end and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from edgeasr.commands import add_model_arguments, recognizer_from_args
from edgeasr.errors import EdgeAsrError
from edgeasr.stream import Recognizer, Result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line (file, text, tokens, timestamps, stats)")
    p.add_argument("--timestamps", action="store_true",
                   help="also print each token with its time in seconds")
    add_model_arguments(p)


def _pieces(rec: Recognizer, tokens: list[int]) -> list[str]:
    to_piece = getattr(rec.tokenizer, "id_to_piece", None)
    return [to_piece(t) for t in tokens] if to_piece else [str(t) for t in tokens]


def format_result(rec: Recognizer, path: Path, r: Result, as_json: bool, timestamps: bool) -> str:
    """The text printed for one file."""
    if as_json:
        d = {"file": str(path), **r.to_dict()}
        if timestamps:
            d["pieces"] = _pieces(rec, r.tokens)
        return json.dumps(d, ensure_ascii=False)
    lines = [f"{path}\t{r.text}"]
    if timestamps:
        lines += [f"  {t:8.2f}  {p}" for t, p in zip(r.timestamps, _pieces(rec, r.tokens),
                                                      strict=True)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rec = recognizer_from_args(args)
    failed: list[tuple[Path, str]] = []
    bar = tqdm(args.files, unit="file", disable=len(args.files) < 2, file=sys.stderr)
    for path in bar:
        try:
            r = rec.transcribe(path)
        except (EdgeAsrError, OSError) as e:
            failed.append((path, str(e)))
            bar.write(f"edgeasr: skipping {path}: {e}", file=sys.stderr)
            continue
        line = format_result(rec, path, r, args.json, args.timestamps)
        if bar.disable:
            print(line, flush=True)
        else:
            bar.write(line, file=sys.stdout)
    bar.close()
    if failed:
        print(f"edgeasr: {len(failed)} of {len(args.files)} file(s) failed:", file=sys.stderr)
        for path, why in failed:
            print(f"  {path}: {why}", file=sys.stderr)
        return 1
    return 0
