"""Decoder logic, verified exactly on a small deterministic numpy backend.

``ToyBackend`` implements the backend interface with random projection weights (the HAT joint
``h = tanh(e + p)``, a sigmoid blank head, a label log-softmax, an optional duration head and a
stateless 2-token predictor), so every decoding rule can be compared against a brute-force or
step-by-step reference. tests/test_stream.py and tests/test_endpoint.py reuse it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeasr.backends.base import BackendSpec, CacheSpec
from edgeasr.decoding import (
    DecodingConfig,
    DecodingError,
    DualBlankGate,
    GreedyDecoder,
    ModifiedBeamSearchDecoder,
    NarGreedyDecoder,
    SarDecoder,
    TdtGreedyDecoder,
    ViterbiDecoder,
    make_decoder,
)
from edgeasr.decoding.base import full_logprobs, log_softmax, sigmoid


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return log_softmax(x, axis=-1)


class ToyBackend:
    """Deterministic numpy backend with random weights; see the module docstring.

    The encoder averages each 7-frame window of features (stride 4, like the conv front end)
    and projects it; feature 0 of every frame tracks loudness, and the blank head weights it
    strongly, so silence decodes to blank and loud audio to tokens (the endpoint tests rely
    on this). A running-sum cache makes the encoder stateful, as a real one is.
    """

    def __init__(
        self,
        vocab_size: int = 6,
        joint_dim: int = 8,
        chunk: int = 4,
        durations: tuple[int, ...] = (),
        seed: int = 0,
        blank_bias: float = 0.0,
        tail_padding_s: float = 0.3,
    ) -> None:
        rng = np.random.default_rng(seed)
        j, v = joint_dim, vocab_size
        self.spec = BackendSpec(
            vocab_size=v,
            joint_dim=j,
            chunk_frames=chunk,
            feature_frames=4 * chunk + 7,
            feature_shift=4 * chunk,
            frame_shift_s=0.04,
            durations=durations,
            tail_padding_s=tail_padding_s,
            caches=(
                CacheSpec("summary", (1, 1, j), "float32", 1),
                CacheSpec("processed_frames", (1,), "int64", 0),
            ),
            iam_threshold=0.9,
            hat_threshold=0.9,
        )
        self.emb = rng.normal(size=(2, v, j)).astype(np.float32)
        self.w_blank = rng.normal(size=j).astype(np.float32)
        self.w_blank[0] = 5.0  # loudness feature drives the blank decision
        self.b_blank = np.float32(blank_bias)
        self.w_labels = (2.0 * rng.normal(size=(v - 1, j))).astype(np.float32)
        self.w_dur = (2.0 * rng.normal(size=(len(durations), j))).astype(np.float32)
        self.w_enc = (0.3 * rng.normal(size=(80, j))).astype(np.float32)
        self.w_enc[:, 0] = 0.0
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def init_caches(self, batch: int) -> dict[str, np.ndarray]:
        return {s.name: s.zeros(batch) for s in self.spec.caches}

    def encoder(self, features, caches):
        self._count("encoder")
        n, t, f = features.shape
        assert t == self.spec.feature_frames and f == 80
        c = self.spec.chunk_frames
        win = np.stack([features[:, 4 * k : 4 * k + 7].mean(axis=1) for k in range(c)], axis=1)
        x = np.tanh(win @ self.w_enc)
        x[..., 0] = -0.5 * (win.mean(axis=-1) + 7.0)  # > 0 for silence (log-mel ~ -15.9)
        frames = (x + 0.2 * caches["summary"][0][:, None, :]).astype(np.float32)
        new = {
            "summary": (0.5 * caches["summary"] + 0.5 * frames.mean(axis=1)[None]).astype(
                np.float32
            ),
            "processed_frames": caches["processed_frames"] + c,
        }
        return frames, new

    def predictor(self, context):
        self._count("predictor")
        assert context.dtype == np.int64 and context.shape[1] == 2
        out = np.tanh(self.emb[0][context[:, 0]] + self.emb[1][context[:, 1]])
        out[:, 0] = 0.0  # the predictor does not move the loudness feature
        return out.astype(np.float32)

    def joint_blank(self, e, p):
        self._count("joint_blank")
        h = np.tanh(e + p).astype(np.float32)
        return h, (h @ self.w_blank + self.b_blank).astype(np.float32), h @ self.w_dur.T

    def joint_labels(self, h):
        self._count("joint_labels")
        self.calls["label_rows"] = self.calls.get("label_rows", 0) + len(h)
        return _log_softmax(h @ self.w_labels.T).astype(np.float32)

    def iam_joint(self, frames):
        self._count("iam_joint")
        h = np.tanh(frames).astype(np.float32)
        return h @ self.w_blank + self.b_blank, _log_softmax(h @ self.w_labels.T), h @ self.w_dur.T


def random_frames(n: int, t: int, j: int = 8, seed: int = 1, scale: float = 1.5) -> np.ndarray:
    return (scale * np.random.default_rng(seed).normal(size=(n, t, j))).astype(np.float32)


def run(decoder, frames: np.ndarray, chunk: int | None = None):
    """Decode ``frames[N, T, J]`` in chunks of ``chunk`` frames (all at once if None)."""
    states = [decoder.init_state() for _ in range(frames.shape[0])]
    step = chunk or frames.shape[1]
    for a in range(0, frames.shape[1], step):
        decoder.decode_chunk(frames[:, a : a + step], states)
    decoder.finalize(states)
    return states, [decoder.best(s) for s in states]


def same(a, b) -> bool:
    """Equal hypotheses: same tokens on the same frames, scores equal up to float32 rounding
    (a backend's matmul may round differently for different batch shapes)."""
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a.tokens == b.tokens and a.frames == b.frames and abs(a.score - b.score) < 1e-4


def reference_greedy(be: ToyBackend, frames: np.ndarray, max_symbols: int = 1, bp: float = 0.0):
    """Unbatched textbook HAT greedy search: full V distribution at every step."""
    tokens, ctx = [], [0, 0]
    for t in range(frames.shape[0]):
        for _ in range(max_symbols):
            p = be.predictor(np.array([ctx], dtype=np.int64))
            h, b, _ = be.joint_blank(frames[t : t + 1], p)
            lp = full_logprobs(b - bp, be.joint_labels(h))[0]
            k = int(np.argmax(lp))
            if k == 0:
                break
            tokens.append(k)
            ctx = [ctx[1], k]
    return tokens


# --------------------------------------------------------------------------- greedy / gated


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_greedy_matches_reference_and_is_chunk_invariant(max_symbols: int) -> None:
    be = ToyBackend()
    frames = random_frames(3, 12)
    dec = GreedyDecoder(be, max_symbols_per_frame=max_symbols)
    _, whole = run(dec, frames)
    _, chunked = run(dec, frames, chunk=4)
    _, uneven = run(dec, frames, chunk=5)
    for i in range(3):
        ref = reference_greedy(be, frames[i], max_symbols)
        assert list(whole[i].tokens) == ref
        assert whole[i] == chunked[i] == uneven[i]
    assert sum(len(h.tokens) for h in whole) > 5  # the toy really emits tokens
    # batching: each stream alone gives the same result as the batch
    for i in range(3):
        assert run(dec, frames[i : i + 1], chunk=4)[1][0] == whole[i]


def test_greedy_path_never_beats_brute_force_best_path() -> None:
    """Greedy is one alignment among all one-symbol-per-frame alignments: score <= the best."""
    be = ToyBackend(vocab_size=4, seed=3)
    frames = random_frames(1, 4, seed=5)[0]

    def path_score(labels: tuple[int, ...]) -> float:
        ctx, total = [0, 0], 0.0
        for t, k in enumerate(labels):
            p = be.predictor(np.array([ctx], dtype=np.int64))
            h, b, _ = be.joint_blank(frames[t : t + 1], p)
            total += float(full_logprobs(b, be.joint_labels(h))[0, k])
            if k:
                ctx = [ctx[1], k]
        return total

    scores = {a: path_score(a) for a in itertools.product(range(4), repeat=4)}
    best = max(scores, key=scores.get)
    # greedy's alignment: argmax at each frame
    dec = GreedyDecoder(be)
    _, (hyp,) = run(dec, frames[None])
    greedy_align = tuple(
        hyp.tokens[hyp.frames.index(t)] if t in hyp.frames else 0 for t in range(4)
    )
    assert scores[greedy_align] <= scores[best] + 1e-6
    # exact modified beam search (no pruning) finds the MAP *sequence* (alignments summed)
    seq_scores: dict[tuple[int, ...], float] = {}
    for a, s in scores.items():
        key = tuple(k for k in a if k)
        seq_scores[key] = float(np.logaddexp(seq_scores.get(key, -np.inf), s))
    map_seq = max(seq_scores, key=seq_scores.get)
    _, (beam_hyp,) = run(ModifiedBeamSearchDecoder(be, beam=4**4), frames[None])
    assert beam_hyp.tokens == map_seq
    assert beam_hyp.score == pytest.approx(seq_scores[map_seq], abs=1e-4)


def test_gate_that_never_skips_equals_greedy() -> None:
    be = ToyBackend()
    frames = random_frames(2, 12, seed=7)
    plain = run(GreedyDecoder(be), frames, chunk=4)
    states, gated = run(
        GreedyDecoder(be, gate=DualBlankGate(iam_threshold=1.0, hat_threshold=0.5)),
        frames,
        chunk=4,
    )
    assert gated == plain[1]
    # HAT threshold 0.5 is exact yet skips softmaxes wherever blank already wins
    assert all(s.stats.skipped_frames == 0 for s in states)
    assert sum(s.stats.skipped_softmaxes for s in states) > 0
    for s in states:
        assert s.stats.label_softmaxes + s.stats.skipped_softmaxes >= s.stats.frames


def test_iam_gate_skips_exactly_the_iam_blank_frames() -> None:
    be = ToyBackend()
    frames = random_frames(2, 12, seed=9)
    theta = 0.7
    iam_blank = sigmoid(be.iam_joint(frames)[0])
    expected_skips = (iam_blank > theta).sum(axis=1)
    assert 0 < expected_skips.sum() < iam_blank.size
    dec = GreedyDecoder(be, gate=DualBlankGate(iam_threshold=theta, hat_threshold=1.0))
    states, hyps = run(dec, frames, chunk=4)
    for i, s in enumerate(states):
        assert s.stats.skipped_frames == expected_skips[i]
        assert s.stats.skipped_softmaxes == 0
        skipped = set(np.flatnonzero(iam_blank[i] > theta))
        assert not skipped & set(hyps[i].frames)  # no token on a skipped frame
    # fewer label softmaxes than the ungated search
    ungated, _ = run(GreedyDecoder(be), frames, chunk=4)
    assert sum(s.stats.label_softmaxes for s in states) < sum(
        s.stats.label_softmaxes for s in ungated
    )


def test_iam_blank_from_joint_blank_equals_iam_joint() -> None:
    be = ToyBackend()
    frames = random_frames(2, 4)
    flat = frames.reshape(-1, 8)
    _, b, _ = be.joint_blank(flat, np.zeros_like(flat))
    np.testing.assert_allclose(b.reshape(2, 4), be.iam_joint(frames)[0], rtol=1e-6)


def test_hat_threshold_skips_label_calls() -> None:
    """θ_HAT decides blank without the label head: fewer label rows are computed than
    without the gate, and the visits it decided count as skipped softmaxes."""
    frames = random_frames(2, 16, seed=2)
    be, plain_be = ToyBackend(), ToyBackend()
    states, gated = run(GreedyDecoder(be, gate=DualBlankGate(1.0, 0.3)), frames, chunk=4)
    plain_states, plain = run(GreedyDecoder(plain_be), frames, chunk=4)
    assert sum(s.stats.skipped_softmaxes for s in states) > 0
    assert be.calls["label_rows"] < plain_be.calls["label_rows"]
    # every visit of the plain search needed the labels; the gated one only some of them
    assert sum(s.stats.label_softmaxes for s in plain_states) == sum(
        s.stats.frames for s in plain_states)
    assert sum(s.stats.label_softmaxes + s.stats.skipped_softmaxes for s in states) == sum(
        s.stats.frames for s in states)


def test_one_joint_call_per_emission_not_per_frame() -> None:
    """The joint of the frames a stream may still visit is one batched call per emission
    round (the predictor output only changes on emission), so a chunk costs ~1 + tokens
    calls, not one per frame; the result is the per-frame reference's."""
    be = ToyBackend(blank_bias=2.0)
    frames = random_frames(3, 16, seed=5)
    states, hyps = run(GreedyDecoder(be), frames, chunk=8)
    for i in range(3):
        assert list(hyps[i].tokens) == reference_greedy(ToyBackend(blank_bias=2.0), frames[i])
    tokens = sum(len(h.tokens) for h in hyps)
    visits = sum(s.stats.frames for s in states)
    assert 0 < tokens < visits
    assert be.calls["joint_blank"] <= 2 + tokens + 2  # 2 chunks, + one round per emission
    assert be.calls["joint_blank"] < visits


# --------------------------------------------------------------------------- TDT


def reference_tdt(be: ToyBackend, frames: np.ndarray, max_symbols: int) -> tuple[list, int]:
    durs = np.array(be.spec.durations)
    tokens, ctx, t, visits, sym = [], [0, 0], 0, 0, 0
    while t < frames.shape[0]:
        visits += 1
        p = be.predictor(np.array([ctx], dtype=np.int64))
        h, b, d = be.joint_blank(frames[t : t + 1], p)
        k = int(np.argmax(full_logprobs(b, be.joint_labels(h))[0]))
        dur = int(durs[np.argmax(d[0])])
        if k == 0:
            t, sym = t + max(dur, 1), 0
            continue
        tokens.append((k, t))
        ctx = [ctx[1], k]
        sym += 1
        if dur == 0 and sym >= max_symbols:
            dur = 1
        if dur:
            t, sym = t + dur, 0
    return tokens, visits


def test_tdt_matches_reference_skips_frames_and_is_chunk_invariant() -> None:
    be = ToyBackend(durations=(0, 1, 2, 3), seed=4)
    frames = random_frames(3, 16, seed=11)
    dec = TdtGreedyDecoder(be, max_symbols_per_frame=2)
    states, whole = run(dec, frames)
    for chunk in (4, 3, 1):
        assert run(dec, frames, chunk=chunk)[1] == whole
    for i in range(3):
        ref, _ = reference_tdt(be, frames[i], 2)
        assert list(zip(whole[i].tokens, whole[i].frames, strict=True)) == ref
    # duration jumps: fewer frames visited than exist
    assert sum(s.stats.frames for s in states) < 3 * 16
    assert sum(len(h.tokens) for h in whole) > 3


def test_tdt_requires_durations() -> None:
    with pytest.raises(DecodingError, match="durations"):
        TdtGreedyDecoder(ToyBackend())


# --------------------------------------------------------------------------- NAR / Viterbi / SAR


def test_nar_without_durations_is_ctc_greedy_on_iam_joint() -> None:
    be = ToyBackend(seed=6)
    frames = random_frames(2, 12, seed=3, scale=3.0)
    _, hyps = run(NarGreedyDecoder(be), frames, chunk=4)
    b, lab, _ = be.iam_joint(frames)
    best = np.argmax(full_logprobs(b, lab), axis=-1)
    for i in range(2):
        seq = best[i]
        expected = [int(k) for j, k in enumerate(seq) if k != 0 and (j == 0 or k != seq[j - 1])]
        assert list(hyps[i].tokens) == expected
    assert sum(len(h.tokens) for h in hyps) > 3


def nar_lattice(be: ToyBackend, frames: np.ndarray):
    """Per-frame (best token, its log-prob) and log-probs over the durations >= 1."""
    b, lab, dl = be.iam_joint(frames[None])
    lp = full_logprobs(b, lab)[0]
    durs = np.array(be.spec.durations)
    keep = durs >= 1
    return np.argmax(lp, -1), np.max(lp, -1), durs[keep], log_softmax(dl[0][:, keep], axis=-1)


def test_nar_with_durations_follows_hainan_jumps() -> None:
    be = ToyBackend(durations=(0, 1, 2, 4), seed=8)
    frames = random_frames(2, 13, seed=4, scale=3.0)
    states, hyps = run(NarGreedyDecoder(be), frames, chunk=4)
    assert run(NarGreedyDecoder(be), frames)[1] == hyps
    for i in range(2):
        tok, _, durs, dlp = nar_lattice(be, frames[i])
        t, expected = 0, []
        while t < 13:
            if tok[t]:
                expected.append((int(tok[t]), t))  # no merging of repeats
            t += int(durs[np.argmax(dlp[t])])
        assert list(zip(hyps[i].tokens, hyps[i].frames, strict=True)) == expected
        assert states[i].stats.frames < 13


def test_viterbi_is_the_best_lattice_path_and_beats_greedy() -> None:
    be = ToyBackend(durations=(0, 1, 2, 3), seed=5)
    n_frames = 7
    frames = random_frames(3, n_frames, seed=6, scale=3.0)
    _, vit = run(ViterbiDecoder(be), frames, chunk=4)
    assert same(run(ViterbiDecoder(be), frames)[1], vit)
    assert same(run(ViterbiDecoder(be), frames, chunk=1)[1], vit)
    _, greedy = run(NarGreedyDecoder(be), frames)
    for i in range(3):
        tok, tok_lp, durs, dlp = nar_lattice(be, frames[i])

        def score(path: list[int], tok_lp=tok_lp, dlp=dlp, durs=durs) -> float:
            # path: the chosen duration index at each visited frame
            t, s = 0, 0.0
            for k in path:
                s += tok_lp[t] + dlp[t, k]
                t += durs[k]
            return s

        # brute force over all duration sequences reaching (or jumping past) the end
        best_s, best_path = -np.inf, None
        for length in range(1, n_frames + 1):
            for path in itertools.product(range(len(durs)), repeat=length):
                ts = np.concatenate([[0], np.cumsum(durs[list(path)])])
                if ts[-2] < n_frames <= ts[-1]:
                    s = score(list(path))
                    if s > best_s:
                        best_s, best_path = s, path
        assert vit[i].score == pytest.approx(best_s, abs=1e-4)
        t, bf_tokens = 0, []
        for k in best_path:
            if tok[t]:
                bf_tokens.append(int(tok[t]))
            t += durs[k]
        assert list(vit[i].tokens) == bf_tokens
        # greedy follows one lattice path: its score is at most Viterbi's
        t, g = 0, 0.0
        while t < n_frames:
            k = int(np.argmax(dlp[t]))
            g += tok_lp[t] + dlp[t, k]
            t += durs[k]
        assert g <= vit[i].score + 1e-5
        gt = [int(tok[f]) for f in greedy[i].frames]
        assert gt == list(greedy[i].tokens)


def test_viterbi_requires_durations() -> None:
    with pytest.raises(DecodingError, match="viterbi"):
        ViterbiDecoder(ToyBackend())


def test_sar_zero_steps_is_nar_and_refinement_matches_reference() -> None:
    be = ToyBackend(durations=(0, 1, 2), seed=2)
    frames = random_frames(2, 8, seed=12, scale=2.0)
    nar = run(NarGreedyDecoder(be), frames, chunk=4)[1]
    assert run(SarDecoder(be, steps=0), frames, chunk=4)[1] == nar
    _, sar = run(SarDecoder(be, steps=2), frames, chunk=4)
    for i in range(2):
        # reference: per chunk, refine every visited frame twice from the NAR draft
        out_tokens, out_frames, ctx_before = [], [], []
        st = NarGreedyDecoder(be).init_state()
        for a in (0, 4):
            nodes = NarGreedyDecoder(be).path(frames[i : i + 1, a : a + 4], [st])[0]
            toks = [k for _, k in nodes]
            for _ in range(2):
                new = []
                for j, (t, _) in enumerate(nodes):
                    hist = [0, 0] + ctx_before + [k for k in toks[:j] if k]
                    p = be.predictor(np.array([hist[-2:]], dtype=np.int64))
                    h, b, _ = be.joint_blank(frames[i, a + t][None], p)
                    new.append(int(np.argmax(full_logprobs(b, be.joint_labels(h))[0])))
                toks = new
            for (t, _), k in zip(nodes, toks, strict=True):
                if k:
                    out_tokens.append(k)
                    out_frames.append(a + t)
                    ctx_before.append(k)
        assert list(sar[i].tokens) == out_tokens
        assert list(sar[i].frames) == out_frames


# --------------------------------------------------------------------------- beam


def test_beam_one_equals_greedy_and_wider_beam_is_chunk_invariant() -> None:
    be = ToyBackend(seed=1)
    frames = random_frames(3, 12, seed=13)
    g = run(GreedyDecoder(be), frames, chunk=4)[1]
    b1 = run(ModifiedBeamSearchDecoder(be, beam=1), frames, chunk=4)[1]
    assert [h.tokens for h in b1] == [h.tokens for h in g]
    assert [h.frames for h in b1] == [h.frames for h in g]
    b4 = run(ModifiedBeamSearchDecoder(be, beam=4), frames, chunk=4)[1]
    assert same(run(ModifiedBeamSearchDecoder(be, beam=4), frames, chunk=5)[1], b4)
    # a wider beam never ends with a worse best score than beam 1
    assert all(w.score >= n.score - 1e-6 for w, n in zip(b4, b1, strict=True))


def test_tdt_beam_one_equals_tdt_greedy_and_jumps() -> None:
    """On a TDT model the beam's extensions are (token, duration) pairs: beam 1 is TDT greedy
    (tokens, frames, several symbols on one frame), any beam is chunk-invariant, a hypothesis
    is not extended on the frames it jumps over, and a wider beam scores no worse."""
    be = ToyBackend(durations=(0, 1, 2, 3), seed=4)
    frames = random_frames(3, 16, seed=11)
    g = run(TdtGreedyDecoder(be, max_symbols_per_frame=2), frames, chunk=4)[1]
    b1_states, b1 = run(ModifiedBeamSearchDecoder(be, beam=1, max_symbols_per_frame=2), frames,
                        chunk=4)
    assert [h.tokens for h in b1] == [h.tokens for h in g]
    assert [h.frames for h in b1] == [h.frames for h in g]
    assert any(len(set(h.frames)) < len(h.frames) for h in b1)  # d = 0: two on one frame
    # frames jumped over are never evaluated: fewer joint calls than frames x symbols
    assert sum(s.stats.label_softmaxes for s in b1_states) < 3 * 16
    b4 = run(ModifiedBeamSearchDecoder(be, beam=4, max_symbols_per_frame=2), frames, chunk=4)[1]
    for chunk in (3, 16):
        b = ModifiedBeamSearchDecoder(be, beam=4, max_symbols_per_frame=2)
        assert same(run(b, frames, chunk=chunk)[1], b4)
    assert all(w.score >= n.score - 1e-6 for w, n in zip(b4, b1, strict=True))


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_blank_penalty_reduces_blank_decisions(method: str) -> None:
    be = ToyBackend(seed=3, blank_bias=1.0)
    frames = random_frames(2, 16, seed=14)

    def n_tokens(bp: float) -> int:
        cfg = DecodingConfig(method=method, blank_penalty=bp, beam_size=3)
        return sum(len(h.tokens) for h in run(make_decoder(be, cfg), frames, chunk=4)[1])

    # one symbol per frame: blank decisions = frames - tokens
    counts = [n_tokens(bp) for bp in (0.0, 1.0, 3.0)]
    assert counts[0] < counts[1] < counts[2] <= 32


# --------------------------------------------------------------------------- config


def test_every_method_decodes_chunk_invariantly_on_a_tdt_model() -> None:
    be = ToyBackend(durations=(0, 1, 2), seed=9)
    frames = random_frames(2, 12, seed=15)
    for method in ("greedy", "gated", "tdt", "nar", "viterbi", "iam-ctc", "beam"):
        dec = make_decoder(be, DecodingConfig(method=method))
        assert same(run(dec, frames, chunk=4)[1], run(dec, frames)[1]), method


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("method", "ctc", "unknown decoding method"),
        ("beam_size", 0, "beam_size"),
        ("iam_threshold", 1.5, "iam_threshold"),
        ("hat_threshold", 0.0, "hat_threshold"),
        ("max_symbols_per_frame", 0, "max_symbols_per_frame"),
        ("sar_steps", -1, "sar_steps"),
    ],
)
def test_bad_decoding_config_is_named(field: str, value, match: str) -> None:
    cfg = DecodingConfig(**{field: value})
    with pytest.raises(DecodingError, match=match):
        cfg.validate()


def test_frames_of_wrong_shape_are_rejected() -> None:
    be = ToyBackend()
    dec = GreedyDecoder(be)
    with pytest.raises(DecodingError, match="expected frames"):
        dec.decode_chunk(np.zeros((2, 4, 5), np.float32), [dec.init_state(), dec.init_state()])
