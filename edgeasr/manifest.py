"""JSONL manifests: one utterance (a :class:`Cut`) per line, plus readers for common layouts.

A line is a JSON object::

    {"id": "1272-128104-0000", "audio": "audio/1272-128104-0000.flac",
     "text": "mister quilter is the apostle", "duration": 5.855}

with optional ``offset`` (seconds into the file, default 0), ``speaker``, ``lang`` and
``translation``. Any other keys (``age``, ``gender``, scores, ...) are kept in ``Cut.extra`` and
written back unchanged, so tools can annotate a manifest without losing what others put there.

Relative ``audio`` paths are relative to the manifest's folder, so a corpus folder can be moved or
copied as a whole. Every problem is reported as ``<file>:<line>: <what is wrong>`` because a
manifest with 100k lines is otherwise hopeless to fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeasr.audio import AudioError, probe_audio
from edgeasr.errors import EdgeAsrError
from edgeasr.text import normalize_text

__all__ = [
    "AUDIO_EXTENSIONS",
    "Cut",
    "ManifestError",
    "iter_manifest",
    "read_audio_text_folder",
    "read_librispeech",
    "read_manifest",
    "write_manifest",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")

_REQUIRED: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "audio": (str,),
    "text": (str,),
    "duration": (int, float),
}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "offset": (int, float),
    "speaker": (str,),
    "lang": (str,),
    "translation": (str,),
}


class ManifestError(EdgeAsrError, ValueError):
    """A manifest or corpus folder that cannot be read; the message names file and line."""


@dataclass
class Cut:
    """One utterance: a span ``[offset, offset + duration)`` of an audio file and its text."""

    id: str
    audio: Path
    text: str
    duration: float
    offset: float = 0.0
    speaker: str | None = None
    lang: str | None = None
    translation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.audio = Path(self.audio)
        if not self.id:
            raise ManifestError("cut id is empty")
        if not (math.isfinite(self.duration) and self.duration >= 0):
            raise ManifestError(f"cut {self.id!r}: duration must be >= 0, got {self.duration}")
        if not (math.isfinite(self.offset) and self.offset >= 0):
            raise ManifestError(f"cut {self.id!r}: offset must be >= 0, got {self.offset}")

    @property
    def end(self) -> float:
        return self.offset + self.duration

    def to_dict(self, base_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict; ``audio`` is made relative to ``base_dir`` when it lies inside it."""
        audio = self.audio
        if base_dir is not None and audio.is_absolute():
            base = Path(base_dir).resolve()
            if audio.resolve().is_relative_to(base):
                audio = audio.resolve().relative_to(base)
        d: dict[str, Any] = {
            "id": self.id,
            "audio": audio.as_posix(),
            "text": self.text,
            "duration": round(self.duration, 6),
        }
        if self.offset:
            d["offset"] = round(self.offset, 6)
        for key in ("speaker", "lang", "translation"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        d.update(self.extra)
        return d


def _cut_from_record(record: Any, base_dir: Path, where: str) -> Cut:
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key, types in (*_REQUIRED.items(), *_OPTIONAL.items()):
        if key not in record:
            if key in _REQUIRED:
                raise ManifestError(f"{where}: missing field {key!r}")
            continue
        value = record[key]
        if key in _OPTIONAL and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            raise ManifestError(
                f"{where}: field {key!r} must be {expected}, got {type(value).__name__} {value!r}"
            )
    if not record["id"]:
        raise ManifestError(f"{where}: field 'id' is empty")
    if not record["audio"]:
        raise ManifestError(f"{where}: field 'audio' is empty")
    duration = float(record["duration"])
    offset = float(record.get("offset") or 0.0)
    if not math.isfinite(duration) or duration < 0:
        raise ManifestError(f"{where}: duration must be >= 0 seconds, got {record['duration']}")
    if not math.isfinite(offset) or offset < 0:
        raise ManifestError(f"{where}: offset must be >= 0 seconds, got {record['offset']}")
    audio = Path(record["audio"])
    if not audio.is_absolute():
        audio = base_dir / audio
    known = _REQUIRED.keys() | _OPTIONAL.keys()
    return Cut(
        id=record["id"],
        audio=audio,
        text=record["text"],
        duration=duration,
        offset=offset,
        speaker=record.get("speaker"),
        lang=record.get("lang"),
        translation=record.get("translation"),
        extra={k: v for k, v in record.items() if k not in known},
    )


def iter_manifest(path: str | os.PathLike[str], check_audio: bool = False) -> Iterator[Cut]:
    """Yield the cuts of a JSONL manifest, validating each line (and duplicate ids).

    ``check_audio`` also checks that every audio file exists (a stat per line).
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: manifest not found")
    base_dir = p.parent
    seen: dict[str, int] = {}
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from None
            cut = _cut_from_record(record, base_dir, where)
            if cut.id in seen:
                raise ManifestError(
                    f"{where}: duplicate id {cut.id!r} (first on line {seen[cut.id]})"
                )
            seen[cut.id] = lineno
            if check_audio and not cut.audio.is_file():
                raise ManifestError(f"{where}: audio file not found: {cut.audio}")
            yield cut


def read_manifest(path: str | os.PathLike[str], check_audio: bool = False) -> list[Cut]:
    """All cuts of a JSONL manifest (see :func:`iter_manifest`)."""
    return list(iter_manifest(path, check_audio=check_audio))


def write_manifest(path: str | os.PathLike[str], cuts: Iterable[Cut]) -> int:
    """Write cuts as JSONL (audio paths relative to the manifest's folder where possible).

    Refuses duplicate ids so that what is written can be read back. Returns the number of cuts.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    base = p.parent
    seen: set[str] = set()
    tmp = p.with_name(p.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for cut in cuts:
            if cut.id in seen:
                tmp.unlink()
                raise ManifestError(f"{p}: duplicate id {cut.id!r} in the cuts to write")
            seen.add(cut.id)
            audio = cut.audio if cut.audio.is_absolute() else Path.cwd() / cut.audio
            d = Cut(**{**cut.__dict__, "audio": audio}).to_dict(base_dir=base)
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(p)  # atomic: a crash never leaves a half-written manifest
    return n


def _duration(audio: Path, where: str) -> float:
    try:
        return probe_audio(audio).duration
    except AudioError as e:
        raise ManifestError(f"{where}: {e}") from None


def read_librispeech(
    root: str | os.PathLike[str], normalize: bool = True, lang: str | None = "en"
) -> list[Cut]:
    """Cuts of a LibriSpeech-style folder: ``<root>/<speaker>/<chapter>/*.trans.txt`` listing
    ``<utt-id> <TEXT>`` lines, audio in ``<utt-id>.flac`` beside it.

    ``normalize`` applies :func:`normalize_text` (LibriSpeech text is upper case).
    """
    r = Path(root)
    if not r.is_dir():
        raise ManifestError(f"{r}: LibriSpeech folder not found")
    trans_files = sorted(r.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise ManifestError(f"{r}: no <speaker>/<chapter>/*.trans.txt files")
    cuts: list[Cut] = []
    seen: set[str] = set()
    for trans in trans_files:
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{trans}:{lineno}"
            uid, _, text = line.strip().partition(" ")
            if not text:
                raise ManifestError(f"{where}: expected '<utterance-id> <text>'")
            if uid in seen:
                raise ManifestError(f"{where}: duplicate id {uid!r}")
            seen.add(uid)
            audio = trans.parent / f"{uid}.flac"
            if not audio.is_file():
                raise ManifestError(f"{where}: audio file not found: {audio}")
            cuts.append(
                Cut(
                    id=uid,
                    audio=audio,
                    text=normalize_text(text) if normalize else text,
                    duration=_duration(audio, where),
                    speaker=uid.split("-")[0],
                    lang=lang,
                )
            )
    return cuts


def read_audio_text_folder(
    root: str | os.PathLike[str],
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    normalize: bool = True,
    skip_missing_text: bool = False,
    lang: str | None = None,
) -> list[Cut]:
    """Cuts of a folder (searched recursively) of audio files each with a same-named ``.txt``.

    The id is the audio path relative to ``root`` without its extension (``sub/utt1``). An audio
    file without its text is an error unless ``skip_missing_text``.
    """
    r = Path(root)
    if not r.is_dir():
        raise ManifestError(f"{r}: folder not found")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    audios = sorted(p for p in r.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if not audios:
        raise ManifestError(f"{r}: no audio files with extension {sorted(exts)}")
    cuts: list[Cut] = []
    seen: dict[str, Path] = {}
    for audio in audios:
        txt = audio.with_suffix(".txt")
        if not txt.is_file():
            if skip_missing_text:
                continue
            raise ManifestError(f"{audio}: no transcript {txt.name} beside it")
        uid = audio.relative_to(r).with_suffix("").as_posix()
        if uid in seen:
            raise ManifestError(f"{audio}: id {uid!r} already used by {seen[uid]}")
        seen[uid] = audio
        text = " ".join(txt.read_text(encoding="utf-8").split())
        cuts.append(
            Cut(
                id=uid,
                audio=audio,
                text=normalize_text(text) if normalize else text,
                duration=_duration(audio, str(audio)),
                lang=lang,
            )
        )
    return cuts
