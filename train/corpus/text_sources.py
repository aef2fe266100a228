"""Raw English text sources available as Debian packages on the build machine.

Every source yields raw sentences (not yet normalized) in a deterministic order, so that a
corpus built twice from the same packages sees the same text.  A source whose package is not
installed raises :class:`MissingSourceError` carrying the exact install command, so the caller
can report it and go on with the other sources.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeasr.errors import EdgeAsrError

__all__ = [
    "MissingSourceError",
    "TextSource",
    "SOURCES",
    "split_sentences",
    "iter_source",
]

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
MAN1_DIR = Path("/usr/share/man/man1")
MAN_MAX_PAGES = 400
BIBLE_MODULE = "engWEB2015eb"  # World English Bible as shipped by Debian sword-text-web


class MissingSourceError(EdgeAsrError, RuntimeError):
    """A text source's package is not installed; ``install`` is the command that fixes it."""

    def __init__(self, source: str, install: str) -> None:
        super().__init__(f"text source {source!r} is not available; install it with: {install}")
        self.source = source
        self.install = install


@dataclass(frozen=True)
class TextSource:
    """One named source of raw sentences.

    ``read(limit)`` yields at most ``limit`` raw sentences (``None`` for all); limits let the
    smoke preset touch each source cheaply while still exercising the real reader.
    """

    name: str
    install: str
    read: Callable[[int | None], Iterator[str]]


_SENT_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[\"'“‘(]?[A-Z0-9])")
_ABBREV_END = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|e\.g|i\.e|cf|No|Vol|Fig)\.$")


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences on terminal punctuation followed by a capital.

    Deliberately simple (no model): the corpus only needs plausible sentences, and a wrong split
    merely yields a sentence that the length filter or the normalizer may drop.
    """
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    parts: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        piece = text[start : m.start()].strip()
        if _ABBREV_END.search(piece):
            continue  # "Dr. Smith": not a sentence end
        parts.append(text[start : m.end()].strip())
        start = m.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _limited(it: Iterator[str], limit: int | None) -> Iterator[str]:
    for i, s in enumerate(it):
        if limit is not None and i >= limit:
            return
        yield s


def _read_bible(limit: int | None) -> Iterator[str]:
    if shutil.which("diatheke") is None or not Path(
        f"/usr/share/sword/mods.d/{BIBLE_MODULE}.conf"
    ).exists():
        raise MissingSourceError("bible", SOURCES["bible"].install)
    # A small key range when only a few sentences are wanted: dumping all 31k verses takes ~13 s.
    key = "Proverbs 1:1-Proverbs 6:35" if limit is not None and limit <= 500 else "Gen-Rev"
    proc = subprocess.run(
        ["diatheke", "-b", BIBLE_MODULE, "-f", "plain", "-k", key],
        capture_output=True, text=True, check=True,
    )
    verse = re.compile(r"^(?:[1-4] )?[A-Z][A-Za-z ]*? \d+:\d+: (.*)$")

    def gen() -> Iterator[str]:
        for line in proc.stdout.splitlines():
            m = verse.match(line.strip())
            if m:
                yield from split_sentences(m.group(1))

    return _limited(gen(), limit)


def _read_wordnet(limit: int | None) -> Iterator[str]:
    files = [WORDNET_DIR / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.exists() for f in files):
        raise MissingSourceError("wordnet", SOURCES["wordnet"].install)
    quoted = re.compile(r'"([^"]{8,})"')

    def gen() -> Iterator[str]:
        for f in files:
            with f.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("  "):
                        continue  # license header
                    gloss = line.partition("| ")[2]
                    for m in quoted.finditer(gloss):
                        yield m.group(1).strip()

    return _limited(gen(), limit)


def _read_fortunes(limit: int | None) -> Iterator[str]:
    if not FORTUNE_DIR.is_dir():
        raise MissingSourceError("fortunes", SOURCES["fortunes"].install)
    # Offensive collections live in off/; plain-text collections have no extension.
    files = sorted(p for p in FORTUNE_DIR.iterdir() if p.is_file() and not p.suffix)
    if not files:
        raise MissingSourceError("fortunes", SOURCES["fortunes"].install)
    skip_files = {"art", "ascii-art"}

    def gen() -> Iterator[str]:
        for f in files:
            if f.name in skip_files:
                continue
            text = f.read_text(encoding="utf-8", errors="replace")
            for entry in text.split("\n%\n"):
                lines = [ln for ln in entry.splitlines() if ln.strip()]
                # attributions ("-- Mark Twain") and indented verse/code are not prose
                prose = [ln for ln in lines if not ln.lstrip().startswith(("--", "―", "—"))]
                if any(ln.startswith(("\t", "    ")) for ln in prose):
                    continue
                yield from split_sentences(" ".join(prose))

    return _limited(gen(), limit)


def _read_debian(limit: int | None) -> Iterator[str]:
    if shutil.which("apt-cache") is None:
        raise MissingSourceError("debian", SOURCES["debian"].install)
    proc = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True)
    descs = sorted(
        {ln[len("Description: "):].strip() for ln in proc.stdout.splitlines()
         if ln.startswith("Description: ")}
    )
    if not descs:
        raise MissingSourceError("debian", "apt-get update")
    return _limited(iter(descs), limit)


def _read_man(limit: int | None) -> Iterator[str]:
    if shutil.which("man") is None or not MAN1_DIR.is_dir():
        raise MissingSourceError("man", SOURCES["man"].install)
    pages = sorted(MAN1_DIR.glob("*.1*"))
    # Rendering costs ~0.1-0.3 s a page, so read only as many pages as the limit needs, and
    # never more than MAN_MAX_PAGES (man pages are a minor, repetitive source).
    max_pages = min(MAN_MAX_PAGES, len(pages) if limit is None else max(1, limit // 20))

    def gen() -> Iterator[str]:
        for page in pages[:max_pages]:
            proc = subprocess.run(
                ["man", "-P", "cat", "-l", str(page)], capture_output=True, text=True,
                env={"MANWIDTH": "2000", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                check=False,
            )
            yield from _man_prose(proc.stdout)

    return _limited(gen(), limit)


def _man_prose(rendered: str) -> Iterator[str]:
    """Sentences from the DESCRIPTION section of a rendered man page (options lists skipped)."""
    in_desc = False
    for line in rendered.splitlines():
        if line and not line[0].isspace():
            in_desc = line.strip() == "DESCRIPTION"
            continue
        body = line.strip()
        if in_desc and body and not body.startswith("-") and len(body.split()) > 4:
            yield from split_sentences(body)


SOURCES: dict[str, TextSource] = {
    s.name: s
    for s in (
        TextSource("bible", "apt-get install -y sword-text-web diatheke", _read_bible),
        TextSource("wordnet", "apt-get install -y wordnet-base", _read_wordnet),
        TextSource("fortunes", "apt-get install -y fortunes fortunes-min", _read_fortunes),
        TextSource("debian", "apt-get update  # apt-cache dumpavail needs package lists",
                   _read_debian),
        TextSource("man", "apt-get install -y man-db manpages", _read_man),
    )
}


def iter_source(name: str, limit: int | None = None) -> Iterator[str]:
    """Raw sentences of source ``name``; raises KeyError naming the known sources."""
    if name not in SOURCES:
        raise KeyError(f"unknown text source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name].read(limit)
