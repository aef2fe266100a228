"""Text-only machine translation with apertium (rule-based), for the cascade baseline of #12.

Why apertium: the HENT-SRT table needs a cascade row (ASR transcript -> a text-only MT system)
that anyone can reproduce offline on a Debian machine without model weights. apertium and its
English -> Spanish data are Debian packages (``apt-get install -y apertium apertium-eng-spa``;
``scripts/setup.sh --dev`` installs them). Debian's data package names the translation mode
``eng-spa`` (ISO 639-3); ``apertium -l`` lists the installed ones.

Batching: one ``apertium`` process call translates a whole list, because each call starts a
pipeline of about ten processes (hundreds of milliseconds). Separating the sentences is the
delicate part. In apertium's plain-text format a newline is only whitespace: a line that does
not end in punctuation is translated together with the next one, and the structural transfer
can move a word across the line break (``"... /slash\\nend with ..."`` comes back as
``".../fin\\nde cuchillada ..."``), so output lines do not map back to input lines. Null-flush
mode (``-z``) drops its separators with this Debian build. The HTML format does what is needed:
the deformatter turns every tag into a superblank that passes through untouched and ends the
sentence at a block element. So each sentence is sent as ``<p id="sN">escaped text</p>`` and
read back by its id; anything missing, repeated or out of order is an error, never a silent
misalignment.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Sequence

from edgeasr.errors import EdgeAsrError

__all__ = ["DEFAULT_PAIR", "ApertiumError", "available_pairs", "check_pair", "translate"]

#: English -> Spanish as Debian's apertium-eng-spa (pulled in by apertium-en-es) names it.
DEFAULT_PAIR = "eng-spa"
INSTALL_HINT = "apt-get install -y apertium apertium-eng-spa (or scripts/setup.sh --dev)"

_BLOCK = re.compile(r'<p id="s(\d+)">(.*?)</p>', re.DOTALL)


class ApertiumError(EdgeAsrError, RuntimeError):
    """apertium is missing, lacks the language pair, fails, or loses the sentence alignment."""


def _executable(executable: str) -> str:
    path = shutil.which(executable)
    if path is None:
        raise ApertiumError(f"{executable!r} not found on PATH; install it with: {INSTALL_HINT}")
    return path


def available_pairs(executable: str = "apertium") -> list[str]:
    """The translation modes installed for ``executable`` (``apertium -l``)."""
    proc = subprocess.run([_executable(executable), "-l"], capture_output=True, text=True,
                          encoding="utf-8", check=False)
    return proc.stdout.split()


def check_pair(pair: str = DEFAULT_PAIR, executable: str = "apertium") -> None:
    """Raise :class:`ApertiumError` unless apertium and its ``pair`` mode are installed; lets a
    long run (decoding a test set first) fail before its work instead of after it."""
    pairs = available_pairs(executable)
    if pair not in pairs:
        raise ApertiumError(f"apertium has no {pair!r} mode (installed: "
                            f"{', '.join(pairs) or 'none'}); install the language data with: "
                            f"{INSTALL_HINT}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def translate(texts: Sequence[str], pair: str = DEFAULT_PAIR, *,
              executable: str = "apertium") -> list[str]:
    """Translate ``texts`` with one ``apertium -u -f html PAIR`` call; returns one string per
    input, in order. Whitespace inside a text is collapsed (a text is one sentence or segment);
    empty texts stay empty. Unknown words are passed through without apertium's ``*`` mark
    (``-u``), so they count as ordinary (wrong) words in BLEU rather than as noise.

    Raises :class:`ApertiumError` when apertium is not installed, the pair is not, apertium
    fails, or its output does not hold every sentence exactly once.
    """
    exe = _executable(executable)
    items = [(i, _one_line(t)) for i, t in enumerate(texts)]
    todo = [(i, t) for i, t in items if t]
    out = ["" for _ in items]
    if not todo:
        return out
    doc = "".join(f'<p id="s{i}">{html.escape(t, quote=False)}</p>\n' for i, t in todo)
    proc = subprocess.run([exe, "-u", "-f", "html", pair], input=doc, capture_output=True,
                          text=True, encoding="utf-8", check=False)
    err = _one_line(proc.stderr)
    if "does not exist" in err:  # apertium's message (with exit status 1) for an unknown mode
        check_pair(pair, executable)
    if proc.returncode != 0:
        raise ApertiumError(f"apertium {pair} failed (exit {proc.returncode}): {err[:300]}")
    found = [(int(m.group(1)), m.group(2)) for m in _BLOCK.finditer(proc.stdout)]
    if [i for i, _ in found] != [i for i, _ in todo]:
        raise ApertiumError(f"apertium {pair}: output has {len(found)} sentence blocks for "
                            f"{len(todo)} inputs (or out of order); cannot align them")
    for i, t in found:
        out[i] = _one_line(html.unescape(t))
    return out
