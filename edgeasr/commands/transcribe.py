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
    p.add_argument("--vad", action="store_true",
                   help="split long recordings at pauses with Silero VAD, transcribe each "
                        "speech segment separately (needs: pip install silero-vad --no-deps)")
    add_model_arguments(p)


def _pieces(rec: Recognizer, tokens: list[int]) -> list[str]:
    to_piece = getattr(rec.tokenizer, "id_to_piece", None)
    return [to_piece(t) for t in tokens] if to_piece else [str(t) for t in tokens]


def format_result(rec: Recognizer, path: Path, r: Result, as_json: bool, timestamps: bool,
                  segments: list[dict] | None = None) -> str:
    """The text printed for one file (``segments``: the VAD segments, when --vad)."""
    if as_json:
        d = {"file": str(path), **r.to_dict()}
        if timestamps:
            d["pieces"] = _pieces(rec, r.tokens)
        if segments is not None:
            d["segments"] = segments
        return json.dumps(d, ensure_ascii=False)
    lines = [f"{path}\t{r.text}"]
    translation = getattr(r, "translation", None)
    if translation is not None:  # a speech-translation bundle: the target text on its own line
        lines.append(f"  [{rec.translator.spec.target_lang}] {translation}")  # type: ignore[attr-defined]
    if segments is not None and timestamps:
        lines += [f"  [{s['start']:8.2f} - {s['end']:8.2f}]  {s['text']}" for s in segments]
    if timestamps:
        lines += [f"  {t:8.2f}  {p}" for t, p in zip(r.timestamps, _pieces(rec, r.tokens),
                                                      strict=True)]
    return "\n".join(lines)


def transcribe_vad(rec: Recognizer, path: Path, vad: object) -> tuple[Result, list[dict]]:
    """VAD-segmented transcription; also returns the segments (seconds and text)."""
    from edgeasr.audio import load_audio
    from edgeasr.vad import SAMPLE_RATE, transcribe_segments

    samples = load_audio(path, target_rate=SAMPLE_RATE)
    r, parts = transcribe_segments(rec, samples, vad=vad)  # type: ignore[arg-type]
    segs = [{"start": round(s.start_s, 3), "end": round(s.end_s, 3), "text": p.text}
            | ({"translation": p.translation} if hasattr(p, "translation") else {})
            for s, p in parts]
    return r, segs


def run(args: argparse.Namespace) -> int:
    rec = recognizer_from_args(args)
    vad = None
    if getattr(args, "vad", False):
        from edgeasr.vad import SileroVad

        vad = SileroVad()
    failed: list[tuple[Path, str]] = []
    bar = tqdm(args.files, unit="file", disable=len(args.files) < 2, file=sys.stderr)
    for path in bar:
        segments = None
        try:
            if vad is not None:
                r, segments = transcribe_vad(rec, path, vad)
            else:
                r = rec.transcribe(path)
        except (EdgeAsrError, OSError) as e:
            failed.append((path, str(e)))
            bar.write(f"edgeasr: skipping {path}: {e}", file=sys.stderr)
            continue
        line = format_result(rec, path, r, args.json, args.timestamps, segments)
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
