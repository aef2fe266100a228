"""Contextual biasing: hotword phrases compiled into an Aho-Corasick context graph.

A user lists rare phrases the model is likely to miss ("kubernetes", "Ada Lovelace"). Each
phrase is normalized with :func:`edgeasr.text.normalize_text` (the transcript convention the
model was trained on) and tokenized by the bundle's tokenizer; the token sequences form a trie
with Aho-Corasick *fail* arcs (longest proper suffix that is also a trie path) and *output*
arcs (the nearest complete phrase on the fail chain), as in icefall's ``ContextGraph`` and
sherpa-onnx's context graph.

Scoring (what :meth:`ContextGraph.step` returns), with ``b`` the phrase's boost per token:

- a token that extends the current partial match earns ``b``;
- reaching the end of a phrase *commits* the bonus earned along it (it is never taken back);
- a token that breaks the match backs off along the fail arcs to the longest suffix that the
  token extends (or to the root): the *uncommitted* bonus of the abandoned partial match is
  removed and the bonus of the new state's path is paid, so a hypothesis never keeps a bonus
  for a phrase it did not finish;
- phrases that end at a suffix of the new state (output arcs, e.g. "b" inside "abc") are
  matched too and their full bonus is committed.

The decoders keep one :class:`ContextState` per hypothesis (greedy: per stream); blank leaves
it unchanged. The graph is immutable after construction, so one graph can be shared by any
number of streams, and changing a stream's hotwords is just pointing it at another graph.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edgeasr.errors import EdgeAsrError
from edgeasr.text import normalize_text

__all__ = [
    "DEFAULT_BOOST",
    "ContextGraph",
    "ContextState",
    "Hotword",
    "HotwordError",
    "PhraseRecall",
    "compile_hotwords",
    "load_hotwords_file",
    "parse_hotwords",
    "phrase_recall",
]

#: Bonus per matched token (log-prob units) when a phrase gives none; sherpa-onnx uses 1.5.
DEFAULT_BOOST = 1.5

_BOOST_RE = re.compile(r"^(?P<text>.*?)\s*:\s*(?P<boost>[-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*$")


class HotwordError(EdgeAsrError, ValueError):
    """A hotword list that cannot be compiled (bad boost, empty phrase, unknown tokens)."""


class TextEncoder(Protocol):
    """What compiling needs from a tokenizer: text -> token ids (never the blank)."""

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Hotword:
    """One phrase as the user wrote it, and its per-token boost (``None``: the default)."""

    text: str
    boost: float | None = None


@dataclass(eq=False)
class ContextState:
    """A node of the context graph (a trie node = a partial or complete phrase match).

    Attributes:
        token: the token on the arc into this node (-1 for the root).
        token_score: bonus for taking that arc from the parent.
        node_score: total bonus along the trie path from the root.
        local_score: the part of ``node_score`` not yet committed, i.e. earned after the last
            complete phrase on the path; it is what a failed match gives back.
        output_score: full bonus of the phrases ending at proper suffixes of this node
            (output arcs), committed each time the node is entered.
        is_end: a phrase ends here; ``phrase`` is its index in the graph's phrase list.
        depth: number of tokens on the path (0 at the root).
    """

    token: int
    token_score: float
    node_score: float
    local_score: float
    depth: int
    is_end: bool = False
    phrase: int = -1
    output_score: float = 0.0
    next: dict[int, ContextState] = field(default_factory=dict)
    fail: ContextState | None = None
    output: ContextState | None = None

    def __repr__(self) -> str:  # the default would recurse through the whole trie
        return (
            f"ContextState(token={self.token}, depth={self.depth}, node_score="
            f"{self.node_score:g}, local_score={self.local_score:g}, is_end={self.is_end})"
        )


class ContextGraph:
    """Aho-Corasick automaton over token sequences with per-phrase boosts.

    ``phrases[i]`` is a token-id sequence and ``boosts[i]`` its bonus per token. Prefixes shared
    by several phrases score the largest of their boosts (icefall's rule).
    """

    def __init__(
        self,
        phrases: Sequence[Sequence[int]],
        boosts: Sequence[float] | float = DEFAULT_BOOST,
        texts: Sequence[str] | None = None,
    ) -> None:
        if isinstance(boosts, (int, float)):
            boosts = [float(boosts)] * len(phrases)
        if len(boosts) != len(phrases):
            raise HotwordError(f"{len(phrases)} phrases but {len(boosts)} boosts")
        self.phrases: list[tuple[int, ...]] = [tuple(int(t) for t in p) for p in phrases]
        self.boosts = [float(b) for b in boosts]
        self.texts = list(texts) if texts is not None else [" ".join(map(str, p))
                                                            for p in self.phrases]
        for i, (p, b) in enumerate(zip(self.phrases, self.boosts, strict=True)):
            if not p:
                raise HotwordError(f"hotword {self.texts[i]!r} has no tokens")
            if any(t <= 0 for t in p):
                raise HotwordError(f"hotword {self.texts[i]!r} contains blank/invalid ids {p}")
            if not b > 0:
                raise HotwordError(f"hotword {self.texts[i]!r}: boost must be > 0, got {b}")
        self.root = ContextState(token=-1, token_score=0.0, node_score=0.0, local_score=0.0,
                                 depth=0)
        self.root.fail = self.root
        self._cont_cache: dict[int, dict[int, float]] = {}
        self._boosts_cache: dict[int, dict[int, float]] = {}
        self._build_trie()
        self._fill_fail_output()

    def __len__(self) -> int:
        return len(self.phrases)

    @property
    def max_boost(self) -> float:
        """The largest single-token bonus any transition can pay (for gating decisions)."""
        return max(self.boosts, default=0.0)

    def _build_trie(self) -> None:
        for i, (phrase, boost) in enumerate(zip(self.phrases, self.boosts, strict=True)):
            node = self.root
            for k, tok in enumerate(phrase):
                child = node.next.get(tok)
                if child is None:
                    child = ContextState(token=tok, token_score=boost, node_score=0.0,
                                         local_score=0.0, depth=node.depth + 1)
                    node.next[tok] = child
                else:
                    child.token_score = max(child.token_score, boost)
                if k == len(phrase) - 1 and not child.is_end:
                    child.is_end, child.phrase = True, i
                node = child
        # scores follow the final token_scores (a later phrase may have raised a prefix)
        todo = deque([self.root])
        while todo:
            node = todo.popleft()
            for child in node.next.values():
                child.node_score = node.node_score + child.token_score
                base = 0.0 if node.is_end else node.local_score
                child.local_score = 0.0 if child.is_end else base + child.token_score
                todo.append(child)

    def _fill_fail_output(self) -> None:
        """Breadth-first: a node's fail target is found from its parent's, which is shallower."""
        todo: deque[ContextState] = deque()
        for child in self.root.next.values():
            child.fail = self.root
            todo.append(child)
        while todo:
            node = todo.popleft()
            for tok, child in node.next.items():
                f = node.fail
                assert f is not None
                while tok not in f.next and f is not self.root:
                    assert f.fail is not None
                    f = f.fail
                child.fail = f.next[tok] if tok in f.next and f.next[tok] is not child \
                    else self.root
                todo.append(child)
            out = node.fail
            while out is not None and out is not self.root and not out.is_end:
                out = out.fail
            node.output = out if out is not None and out is not self.root else None
            node.output_score = (
                node.output.node_score + node.output.output_score if node.output else 0.0
            )

    # -- decoding ---------------------------------------------------------------------------
    def goto(self, state: ContextState, token: int) -> ContextState:
        """The state after ``token``: the trie child, else the longest suffix it extends."""
        node = state
        while token not in node.next:
            if node is self.root:
                return self.root
            assert node.fail is not None
            node = node.fail
        return node.next[token]

    def step(self, state: ContextState, token: int) -> tuple[float, ContextState]:
        """Score and next state for emitting non-blank ``token`` in ``state`` (module doc)."""
        child = state.next.get(token)
        if child is not None:
            return child.token_score + child.output_score, child
        node = self.goto(state, token)
        return node.node_score - state.local_score + node.output_score, node

    def finalize(self, state: ContextState) -> tuple[float, ContextState]:
        """End of the utterance: give back the uncommitted bonus of an unfinished match."""
        return -state.local_score, self.root

    def continuations(self, state: ContextState) -> dict[int, float]:
        """``{token: step score}`` for every token whose score differs from a plain miss.

        A token not listed moves to the root and scores ``-state.local_score``; the listed
        ones are the children of ``state`` and of its fail chain (the only tokens that can
        continue or restart a match). Cached per state (the graph is immutable).
        """
        out = self._cont_cache.get(id(state))
        if out is not None:
            return out
        out = {}
        node: ContextState | None = state
        while node is not None:
            for tok in node.next:
                if tok not in out:
                    out[tok] = self.step(state, tok)[0]
            node = None if node is self.root else node.fail
        self._cont_cache[id(state)] = out
        return out

    def bonuses(self, state: ContextState) -> dict[int, float]:
        """The positive part of :meth:`continuations` (cached per state): what greedy
        search adds to the tokens' log-probs. Only promoting, never penalizing, keeps greedy
        biasing from holding on to a wrong partial match; the beam search scores the full
        step (back-off included) because it can compare alternatives."""
        got = self._boosts_cache.get(id(state))
        if got is None:
            got = {t: s for t, s in self.continuations(state).items() if s > 0}
            self._boosts_cache[id(state)] = got
        return got

    def matched(self, state: ContextState) -> list[int]:
        """Indices of the phrases that end at ``state`` (itself and its output arcs)."""
        found = [state.phrase] if state.is_end else []
        node = state.output
        while node is not None:
            found.append(node.phrase)
            node = node.output
        return found


# -- phrase lists --------------------------------------------------------------------------------
def parse_hotwords(text: str | Iterable[str]) -> list[Hotword]:
    """Split ``"kubernetes, Ada Lovelace :2.5"`` (commas or newlines) into hotwords.

    A trailing ``:<number>`` sets that phrase's boost; ``#`` starts a comment line. An iterable
    of strings is taken as one phrase per item (each may carry its ``:boost``).
    """
    items = re.split(r"[,\n]", text) if isinstance(text, str) else list(text)
    out: list[Hotword] = []
    for raw in items:
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        m = _BOOST_RE.match(item)
        if m:
            phrase, boost = m.group("text").strip(), float(m.group("boost"))
            if not boost > 0:
                raise HotwordError(f"hotword {item!r}: boost must be > 0, got {boost}")
            if not phrase:
                raise HotwordError(f"hotword {item!r} has a boost but no phrase")
            out.append(Hotword(phrase, boost))
        else:
            out.append(Hotword(item))
    return out


def load_hotwords_file(path: str | os.PathLike[str]) -> list[Hotword]:
    """One phrase per line, optional ``:boost``, ``#`` comments, UTF-8."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise HotwordError(f"cannot read hotwords file {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise HotwordError(f"hotwords file {p} is not UTF-8: {e}") from None
    return parse_hotwords(text.splitlines())


def compile_hotwords(
    hotwords: Sequence[Hotword | str] | str,
    tokenizer: TextEncoder,
    boost: float = DEFAULT_BOOST,
) -> ContextGraph | None:
    """Normalize, tokenize and compile phrases; ``None`` when the list is empty.

    Phrases that normalize to nothing (punctuation only) are an error rather than silently
    dropped, so a typo in a hotwords file is noticed. Duplicates are merged (largest boost).
    """
    if not boost > 0:
        raise HotwordError(f"hotword boost must be > 0, got {boost}")
    if isinstance(hotwords, str):
        items = parse_hotwords(hotwords)
    else:
        items = [h if isinstance(h, Hotword) else parse_hotwords([h])[0] for h in hotwords
                 if not (isinstance(h, str) and not h.strip())]
    merged: dict[tuple[int, ...], tuple[str, float]] = {}
    for h in items:
        norm = normalize_text(h.text)
        if not norm:
            raise HotwordError(f"hotword {h.text!r} is empty after text normalization")
        ids = tuple(int(i) for i in tokenizer.encode(norm))
        if not ids:
            raise HotwordError(f"hotword {h.text!r} encodes to no tokens")
        b = boost if h.boost is None else h.boost
        if ids in merged:
            b = max(b, merged[ids][1])
        merged[ids] = (norm, b)
    if not merged:
        return None
    keys = list(merged)
    return ContextGraph(keys, [merged[k][1] for k in keys], [merged[k][0] for k in keys])


# -- evaluation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhraseRecall:
    """How many reference occurrences of the phrases the hypotheses contain.

    ``hits``: occurrences found (per utterance, at most as many as the reference has);
    ``total``: occurrences in the references; ``false_alarms``: hypothesis occurrences beyond
    the reference's count (a phrase "recognized" where it was not said).
    """

    hits: int
    total: int
    false_alarms: int

    @property
    def recall(self) -> float:
        return self.hits / self.total if self.total else 0.0

    def summary(self) -> str:
        return (f"phrase recall {100 * self.recall:.1f}% ({self.hits}/{self.total}), "
                f"false alarms {self.false_alarms}")


def _count(words: list[str], phrase: list[str]) -> int:
    n = len(phrase)
    return sum(words[i : i + n] == phrase for i in range(len(words) - n + 1))


def phrase_recall(refs: Sequence[str], hyps: Sequence[str],
                  phrases: Sequence[Hotword | str]) -> PhraseRecall:
    """Word-boundary phrase occurrences of normalized ``phrases`` in refs vs hyps."""
    if len(refs) != len(hyps):
        raise HotwordError(f"{len(refs)} references but {len(hyps)} hypotheses")
    norm = {normalize_text(p.text if isinstance(p, Hotword) else parse_hotwords([p])[0].text)
            for p in phrases}
    plist = [p.split() for p in sorted(norm) if p]
    hits = total = fa = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        rw, hw = normalize_text(ref).split(), normalize_text(hyp).split()
        for p in plist:
            r, h = _count(rw, p), _count(hw, p)
            hits += min(r, h)
            total += r
            fa += max(0, h - r)
    return PhraseRecall(hits, total, fa)
