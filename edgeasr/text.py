"""The one text normalizer: written text -> spoken-form transcript.

Corpus building (the text a synthetic utterance *says*) and scoring (both sides of a WER) must
agree on what a transcript looks like, otherwise "3" vs "three" counts as an error that the model
never made. So there is exactly one function, :func:`normalize_text`, and both use it.

Rules, applied in this order (English, US reading):

1. Unicode NFKC (full-width digits, ligatures, superscripts become plain characters); typographic
   apostrophes (U+2018, U+2019, U+02BC, backtick) become ``'``; the Unicode minus becomes ``-``.
2. Abbreviations, on the cased text: ``Mr``/``Mrs``/``Dr``/``Prof``/``Jr``/``Sr``/``vs``/``etc``/
   ``approx``/``Mt``/``Ave``/``Dept``/``Govt`` (with or without a period) -> mister, missus,
   doctor, professor, junior, senior, versus, et cetera, approximately, mount, avenue, department,
   government; ``Ms.`` -> miss (only with the period or before a capital, "ms" is also a unit);
   ``St`` -> saint before a capitalised word, street otherwise; ``e.g.`` -> for example,
   ``i.e.`` -> that is; ``No. 5`` -> number five; ``#5`` -> number five.
3. Symbols that are read: ``&`` and, ``@`` at, ``+`` plus, ``=`` equals, ``°`` degrees.
4. Numbers (digits become words, each padded with spaces so "5kg" reads "five kg"):
   - ``3:30`` -> three thirty, ``3:05`` -> three oh five, ``3:00`` -> three o'clock (``15:00``
     -> fifteen hundred); ``3pm`` / ``3 p.m.`` -> three p m.
   - currency ``$5`` -> five dollars, ``$1`` -> one dollar, ``$5.50`` -> five dollars fifty cents,
     ``$0.99`` -> ninety nine cents, ``$2.5 million`` -> two point five million dollars; also
     ``£`` (pounds/pence), ``€`` (euros/cents), ``¥`` (yen).
   - ordinals ``21st`` -> twenty first, ``2nd`` -> second, ``100th`` -> one hundredth.
   - fractions ``1/2`` -> one half, ``3/4`` -> three quarters, ``2/3`` -> two thirds; other
     ``a/b`` -> a over b.
   - percent ``5%`` -> five percent, ``3.5%`` -> three point five percent.
   - negative ``-5`` -> minus five (only when the minus is not preceded by a word character).
   - years: a bare 4-digit integer in 1100..2099 is read as a year: ``1990`` -> nineteen ninety,
     ``1905`` -> nineteen oh five, ``1900`` -> nineteen hundred, ``2005`` -> two thousand five,
     ``2019`` -> twenty nineteen. (A count like "1500" thus reads "fifteen hundred", which is
     also how people say it.)
   - plurals ``1990s`` / ``1990's`` -> nineteen nineties, ``the 60s`` -> the sixties.
   - cardinals with optional thousands commas, up to 10**36 - 1 (``1,000,000`` -> one million;
     no "and": ``123`` -> one hundred twenty three); decimals read digit by digit after "point"
     (``3.14`` -> three point one four); integers with a leading zero (``007``) and integers too
     large for the scale words are read digit by digit.
5. Lowercase.
6. Every character that is not a letter, a whitespace or an apostrophe becomes a space
   (hyphens, periods, commas, quotes, emoji, ...); an apostrophe is kept only between two letters
   (don't, it's, o'clock; "students'" -> students, "'90s" -> nineties).
7. Whitespace collapsed to single spaces, stripped.

The function is pure Python, deterministic and idempotent (normalizing a normalized string is a
no-op), which the tests check.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "ENGLISH_ALPHABET",
    "is_speakable",
    "normalize_text",
    "number_to_words",
    "ordinal_to_words",
    "year_to_words",
]

#: Characters a normalized English transcript may contain besides the space.
ENGLISH_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz'")

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = (
    "",
    "thousand",
    "million",
    "billion",
    "trillion",
    "quadrillion",
    "quintillion",
    "sextillion",
    "septillion",
    "octillion",
    "nonillion",
    "decillion",
)
_MAX_CARDINAL = 1000 ** len(_SCALES) - 1

_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _digits(s: str) -> str:
    return " ".join(_ONES[int(c)] for c in s)


def _under_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest:
        words.append(_ONES[rest])
    return words


def number_to_words(n: int) -> str:
    """Cardinal reading of an integer: ``123`` -> "one hundred twenty three".

    Integers beyond the decillions have no conventional reading and are read digit by digit.
    """
    if n < 0:
        return "minus " + number_to_words(-n)
    if n == 0:
        return "zero"
    if n > _MAX_CARDINAL:
        return _digits(str(n))
    words: list[str] = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            chunk = _under_thousand(group)
            if _SCALES[scale]:
                chunk.append(_SCALES[scale])
            words = chunk + words
        scale += 1
    return " ".join(words)


def _ordinalize_word(word: str) -> str:
    if word in _ORDINAL_IRREGULAR:
        return _ORDINAL_IRREGULAR[word]
    if word.endswith("y"):
        return word[:-1] + "ieth"
    return word + "th"


def ordinal_to_words(n: int) -> str:
    """Ordinal reading: ``21`` -> "twenty first", ``100`` -> "one hundredth"."""
    words = number_to_words(n).split()
    words[-1] = _ordinalize_word(words[-1])
    return " ".join(words)


def year_to_words(year: int) -> str:
    """Year reading: 1990 -> "nineteen ninety", 1905 -> "nineteen oh five", 2005 -> "two
    thousand five", 2019 -> "twenty nineteen". Outside 1100..2099 the cardinal is returned."""
    if not 1100 <= year <= 2099 or 2000 <= year <= 2009:
        return number_to_words(year)
    high, low = divmod(year, 100)
    if low == 0:
        return f"{number_to_words(high)} hundred"
    if low < 10:
        return f"{number_to_words(high)} oh {_ONES[low]}"
    return f"{number_to_words(high)} {number_to_words(low)}"


def _pluralize_last(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith(("x", "s")):
        last += "es"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _int_words(raw: str) -> str:
    """Reading of an integer string (commas allowed) as it appears in text."""
    plain = raw.replace(",", "")
    if len(plain) > 1 and plain.startswith("0"):
        return _digits(plain)
    value = int(plain)
    if "," not in raw and len(plain) == 4:
        return year_to_words(value)
    return number_to_words(value)


def _decimal_words(raw: str) -> str:
    """Reading of ``12.34`` / ``1,000.5`` / ``12``: integer part, then "point" and digits."""
    whole, _, frac = raw.partition(".")
    if not frac:
        return _int_words(whole)
    whole_words = number_to_words(int(whole.replace(",", ""))) if whole else ""
    return f"{whole_words} point {_digits(frac)}".strip()


# --------------------------------------------------------------------------------------------
# Rewrite passes. Each replacement is padded with spaces; step 7 collapses them.

_PRE_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'",
                                "\u2212": "-", "\u2013": "-", "\u2014": " - ",
                                "\u2044": "/"})

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"

_ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "prof": "professor",
    "jr": "junior",
    "sr": "senior",
    "vs": "versus",
    "etc": "et cetera",
    "approx": "approximately",
    "mt": "mount",
    "ave": "avenue",
    "dept": "department",
    "govt": "government",
}
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\b\.?", re.IGNORECASE)
_MS_RE = re.compile(r"\bMs(?:\.|\b(?=\s+[A-Z]))")
_SAINT_RE = re.compile(r"\bSt\b\.?(?=\s*[A-Z])")
_STREET_RE = re.compile(r"\bst\b\.?", re.IGNORECASE)
_EG_RE = re.compile(r"\be\.\s?g\b\.?", re.IGNORECASE)
_IE_RE = re.compile(r"\bi\.\s?e\b\.?", re.IGNORECASE)
_NUMBER_SIGN_RE = re.compile(r"(?:\bno\.|#)\s*(?=\d)", re.IGNORECASE)

_SYMBOLS = {"&": " and ", "@": " at ", "+": " plus ", "=": " equals ", "°": " degrees "}
_SYMBOL_RE = re.compile("[" + re.escape("".join(_SYMBOLS)) + "]")

_AMPM_RE = re.compile(r"(?<=\d)\s*([ap])\.?\s?m\b\.?", re.IGNORECASE)
_TIME_RE = re.compile(r"(?<![\d:])(\d{1,2}):([0-5]\d)(?![\d:])")

_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "", ""),
}
_SCALE_WORDS = ("thousand", "million", "billion", "trillion")
_CURRENCY_RE = re.compile(
    r"([$£€¥])\s?(" + _NUM + r")(?:\s*(" + "|".join(_SCALE_WORDS) + r")\b)?", re.IGNORECASE
)
_ORDINAL_RE = re.compile(r"\b(\d+(?:,\d{3})*)(st|nd|rd|th)\b", re.IGNORECASE)
_FRACTION_RE = re.compile(r"(?<![\d/])(\d+)/(\d+)(?![\d/])")
_PERCENT_RE = re.compile(r"(" + _NUM + r")\s?%")
_NEGATIVE_RE = re.compile(r"(?<![\w.])-(?=\d)")
_PLURAL_NUM_RE = re.compile(r"(?<![\d,.])(\d+)'?s\b")
_NUMBER_RE = re.compile(_NUM)

_DROP_RE = re.compile(r"[^\w\s']|[\d_]")
_LONE_APOSTROPHE_RE = re.compile(r"(?<![^\W\d_])'|'(?![^\W\d_])")
_SPACE_RE = re.compile(r"\s+")


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 24:
        return m.group(0)  # not a time (e.g. a score "31:15"): leave to the digit rules
    hour_words = number_to_words(hour)
    if minute == 0:
        return f" {hour_words} o'clock " if hour <= 12 else f" {hour_words} hundred "
    if minute < 10:
        return f" {hour_words} oh {_ONES[minute]} "
    return f" {hour_words} {number_to_words(minute)} "


def _currency(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group(1)]
    amount, scale = m.group(2), m.group(3)
    if scale:
        return f" {_decimal_words(amount)} {scale.lower()} {many} "
    whole, _, frac = amount.partition(".")
    units = int(whole.replace(",", ""))
    if frac and (len(frac) != 2 or not sub_one):
        return f" {_decimal_words(amount)} {many} "
    parts = []
    if units or not frac or int(frac) == 0:
        parts.append(f"{number_to_words(units)} {one if units == 1 else many}")
    if frac and int(frac):
        cents = int(frac)
        parts.append(f"{number_to_words(cents)} {sub_one if cents == 1 else sub_many}")
    return " " + " ".join(parts) + " "


def _fraction(m: re.Match[str]) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    if den == 0 or den > 10 or den == 1:
        return f" {number_to_words(num)} over {number_to_words(den)} "
    if den == 2:
        name = "half"
    elif den == 4:
        name = "quarter"
    else:
        name = ordinal_to_words(den)
    if num != 1:
        name = "halves" if den == 2 else name + "s"
    return f" {number_to_words(num)} {name} "


def _plural_number(m: re.Match[str]) -> str:
    digits = m.group(1)
    words = year_to_words(int(digits)) if len(digits) == 4 else _int_words(digits)
    return f" {_pluralize_last(words)} "


def normalize_text(s: str) -> str:
    """Turn written text into the spoken-form transcript used for training and scoring.

    See the module docstring for the rules. Example::

        >>> normalize_text("Dr. Smith paid $5.50 on May 21st at 3:30pm!")
        'doctor smith paid five dollars fifty cents on may twenty first at three thirty p m'
    """
    # One pass can expose input for an earlier rule (a number glued to an abbreviation: "0SR"
    # -> "zero sr"), so passes repeat until the text is stable; the output of a pass is plain
    # lowercase words, so this settles in one or two passes (bounded for safety).
    out = _normalize_pass(s)
    for _ in range(3):
        again = _normalize_pass(out)
        if again == out:
            break
        out = again
    return out


def _normalize_pass(s: str) -> str:
    """One application of every rule, in order (see :func:`normalize_text`)."""
    s = unicodedata.normalize("NFKC", s).translate(_PRE_TRANSLATE)
    s = _EG_RE.sub(" for example ", s)
    s = _IE_RE.sub(" that is ", s)
    s = _NUMBER_SIGN_RE.sub(" number ", s)
    s = _MS_RE.sub(" miss ", s)
    s = _ABBREV_RE.sub(lambda m: f" {_ABBREVIATIONS[m.group(1).lower()]} ", s)
    s = _SAINT_RE.sub(" saint ", s)
    s = _STREET_RE.sub(" street ", s)
    s = _SYMBOL_RE.sub(lambda m: _SYMBOLS[m.group(0)], s)
    s = _AMPM_RE.sub(lambda m: f" {m.group(1).lower()} m ", s)
    s = _TIME_RE.sub(_time, s)
    s = _CURRENCY_RE.sub(_currency, s)
    s = _ORDINAL_RE.sub(lambda m: f" {ordinal_to_words(int(m.group(1).replace(',', '')))} ", s)
    s = _FRACTION_RE.sub(_fraction, s)
    s = _PERCENT_RE.sub(lambda m: f" {_decimal_words(m.group(1))} percent ", s)
    s = s.replace("%", " percent ")
    s = _NEGATIVE_RE.sub(" minus ", s)
    s = _PLURAL_NUM_RE.sub(_plural_number, s)
    s = _NUMBER_RE.sub(lambda m: f" {_decimal_words(m.group(0))} ", s)
    s = s.lower()
    s = _DROP_RE.sub(" ", s)
    s = _LONE_APOSTROPHE_RE.sub(" ", s)
    return _SPACE_RE.sub(" ", s).strip()


def is_speakable(s: str, alphabet: frozenset[str] = ENGLISH_ALPHABET) -> bool:
    """True when ``s`` normalizes to a non-empty transcript written only in ``alphabet``.

    Used to filter corpus sentences: text in another script, or with letters the tokenizer was
    not trained on (accents, say), would make a transcript the synthetic voice cannot say or the
    model cannot spell.
    """
    normalized = normalize_text(s)
    return bool(normalized) and all(c == " " or c in alphabet for c in normalized)
