"""Exact input -> output pairs for the shared text normalizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeasr.text import (
    is_speakable,
    normalize_text,
    number_to_words,
    ordinal_to_words,
    year_to_words,
)

CASES = [
    # case, whitespace, punctuation
    ("  Hello\tWORLD  ", "hello world"),
    ("Hello, world! How are you?", "hello world how are you"),
    ("well-known", "well known"),
    ("“quoted” ‘text’", "quoted text"),
    ("", ""),
    ("?!...", ""),
    # apostrophes
    ("I don't know, it's fine.", "i don't know it's fine"),
    ("I don’t", "i don't"),
    ("students' books", "students books"),
    ("'hello'", "hello"),
    # unicode NFKC
    ("ﬁne", "fine"),
    ("１２３", "one hundred twenty three"),
    ("½ cup", "one half cup"),
    ("café", "café"),
    # cardinals
    ("0", "zero"),
    ("7", "seven"),
    ("13", "thirteen"),
    ("40", "forty"),
    ("99", "ninety nine"),
    ("123", "one hundred twenty three"),
    ("1000", "one thousand"),
    ("1,000,000", "one million"),
    ("12,345", "twelve thousand three hundred forty five"),
    ("1000001", "one million one"),
    ("3000000000", "three billion"),
    ("007", "zero zero seven"),
    ("-5 degrees", "minus five degrees"),
    ("pages 10-20", "pages ten twenty"),
    ("1, 2, 3", "one two three"),
    # decimals
    ("3.5", "three point five"),
    ("0.25", "zero point two five"),
    ("3.14", "three point one four"),
    ("1,000.5", "one thousand point five"),
    # ordinals
    ("21st", "twenty first"),
    ("1st 2nd 3rd 4th", "first second third fourth"),
    ("11th 12th 13th 22nd", "eleventh twelfth thirteenth twenty second"),
    ("the 20th century", "the twentieth century"),
    ("100th", "one hundredth"),
    ("1,000th", "one thousandth"),
    # years
    ("1990", "nineteen ninety"),
    ("2005", "two thousand five"),
    ("2000", "two thousand"),
    ("1905", "nineteen oh five"),
    ("1900", "nineteen hundred"),
    ("2019", "twenty nineteen"),
    ("in 1066", "in one thousand sixty six"),
    ("the 1990s", "the nineteen nineties"),
    ("the 1990's", "the nineteen nineties"),
    ("the '90s", "the nineties"),
    ("the 60s", "the sixties"),
    # currency
    ("$5", "five dollars"),
    ("$1", "one dollar"),
    ("$5.50", "five dollars fifty cents"),
    ("$1.01", "one dollar one cent"),
    ("$0.99", "ninety nine cents"),
    ("$5.00", "five dollars"),
    ("$2.5 million", "two point five million dollars"),
    ("$1,200", "one thousand two hundred dollars"),
    ("€3", "three euros"),
    ("£1.01", "one pound one penny"),
    ("£2.50", "two pounds fifty pence"),
    ("¥100", "one hundred yen"),
    # percent, fractions
    ("50%", "fifty percent"),
    ("3.5 %", "three point five percent"),
    ("1/2", "one half"),
    ("3/4", "three quarters"),
    ("2/3", "two thirds"),
    ("5/100", "five over one hundred"),
    # times
    ("3:30", "three thirty"),
    ("10:05 a.m.", "ten oh five a m"),
    ("3:30pm", "three thirty p m"),
    ("at 7 PM", "at seven p m"),
    ("12:00", "twelve o'clock"),
    ("15:00", "fifteen hundred"),
    # abbreviations and symbols
    ("Mr. and Mrs. Jones", "mister and missus jones"),
    ("Dr Who vs. the world etc.", "doctor who versus the world et cetera"),
    ("Ms. Smith", "miss smith"),
    ("Prof. X and Jr.", "professor x and junior"),
    ("St. Louis is on Main St.", "saint louis is on main street"),
    ("e.g. this, i.e. that", "for example this that is that"),
    ("No. 5 and #7", "number five and number seven"),
    ("no more", "no more"),
    ("Mt. Everest", "mount everest"),
    ("rock & roll", "rock and roll"),
    ("a@b", "a at b"),
    ("C++", "c plus plus"),
    ("2 + 2 = 4", "two plus two equals four"),
    ("30°", "thirty degrees"),
    # digits glued to letters
    ("COVID-19", "covid nineteen"),
    ("5kg", "five kg"),
    ("mp3", "mp three"),
    # emoji and other symbols are dropped
    ("hi 🙂 there *", "hi there"),
    (
        "Dr. Smith paid $5.50 on May 21st, 1990 & left at 3:30pm!",
        "doctor smith paid five dollars fifty cents on may twenty first nineteen ninety "
        "and left at three thirty p m",
    ),
]


@pytest.mark.parametrize(("written", "spoken"), CASES)
def test_normalize_text_exact(written: str, spoken: str) -> None:
    assert normalize_text(written) == spoken


@pytest.mark.parametrize(("written", "spoken"), CASES)
def test_normalize_text_is_idempotent_on_cases(written: str, spoken: str) -> None:
    assert normalize_text(spoken) == spoken


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalize_text_idempotent_and_clean(s: str) -> None:
    once = normalize_text(s)
    assert normalize_text(once) == once
    assert not any(c.isdigit() for c in once)
    assert once == once.strip() and "  " not in once


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (15, "fifteen"),
        (101, "one hundred one"),
        (110, "one hundred ten"),
        (999_999, "nine hundred ninety nine thousand nine hundred ninety nine"),
        (10**12, "one trillion"),
        (-42, "minus forty two"),
        (10**36, "one " + " ".join(["zero"] * 36)),
    ],
)
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1, "first"), (5, "fifth"), (8, "eighth"), (9, "ninth"), (12, "twelfth"), (20, "twentieth"),
     (40, "fortieth"), (101, "one hundred first"), (1000000, "one millionth")],
)
def test_ordinal_to_words(n: int, words: str) -> None:
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize(
    ("y", "words"),
    [(1066, "one thousand sixty six"), (1100, "eleven hundred"), (1776, "seventeen seventy six"),
     (2009, "two thousand nine"), (2010, "twenty ten"), (2099, "twenty ninety nine"),
     (2100, "two thousand one hundred")],
)
def test_year_to_words(y: int, words: str) -> None:
    assert year_to_words(y) == words


def test_is_speakable() -> None:
    assert is_speakable("It's 5 o'clock!")
    assert not is_speakable("")
    assert not is_speakable("?!")
    assert not is_speakable("café")
    assert not is_speakable("Привет")
    assert is_speakable("café", alphabet=frozenset("abcdefghijklmnopqrstuvwxyzé'"))


def test_rules_exposed_by_an_earlier_rule_are_applied() -> None:
    # "0SR": the abbreviation only stands alone once the number is spoken.
    assert normalize_text("0SR") == "zero senior"
    assert normalize_text(normalize_text("0SR")) == "zero senior"
