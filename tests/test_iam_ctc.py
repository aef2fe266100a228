"""IAM-CTC greedy decoding (``--decoding iam-ctc``) on the tiny random exported bundle.

The reference is computed here with numpy from the model's own weights, on the null-predictor
joint of the *whole* utterance (``h = tanh(e)``, HAT log-probs, per-frame argmax, merge repeats,
drop blanks), independently of the exported ``iam_joint`` graph and of any chunking. Both a TDT
bundle (durations must be ignored) and one without durations are decoded.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edgeasr.backends.base import Backend
from edgeasr.decoding import DecodingConfig, DecodingError, IamCtcDecoder
from edgeasr.decoding.nar import ctc_collapse


@pytest.fixture(params=[(0, 1, 2), ()], ids=["tdt", "no-durations"])
def bundle(request, tiny_bundle) -> tuple[Path, object]:
    return tiny_bundle(request.param)


def null_joint_argmax(model, frames: np.ndarray) -> np.ndarray:
    """Per-frame argmax over ``[blank, labels]`` of the joint with ``p = 0``, in numpy."""
    joint = model.joint
    w_b = joint.blank_head.weight.detach().numpy()[0].astype(np.float64)
    c_b = float(joint.blank_head.bias.detach().numpy()[0])
    w_l = joint.label_head.weight.detach().numpy().astype(np.float64)
    c_l = joint.label_head.bias.detach().numpy().astype(np.float64)
    h = np.tanh(frames.astype(np.float64))
    b = h @ w_b + c_b
    lab = h @ w_l.T + c_l
    lab = lab - np.logaddexp.reduce(lab, axis=-1, keepdims=True)
    logp = np.concatenate([-np.logaddexp(0, -b)[..., None], -np.logaddexp(0, b)[..., None] + lab],
                          axis=-1)
    return np.argmax(logp, axis=-1)


def ctc_reference(best: np.ndarray) -> tuple[list[int], list[int]]:
    """Textbook CTC greedy output of a whole utterance: tokens and the frame each starts on."""
    tokens, frames, t = [], [], 0
    for tok, run in itertools.groupby(best.tolist()):
        if tok != 0:
            tokens.append(tok)
            frames.append(t)
        t += len(list(run))
    return tokens, frames


class RecordingBackend:
    """Delegates to a backend and keeps every encoder output, to rebuild the utterance."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.frames: list[np.ndarray] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def encoder(self, features, caches):
        frames, new = self.inner.encoder(features, caches)
        self.frames.append(frames)
        return frames, new


def ort_recognizer(root: Path, backend_wrapper=None):
    from edgeasr.backends.onnxruntime import OrtBackend
    from edgeasr.bundle import Bundle
    from edgeasr.stream import Recognizer, RecognizerConfig
    from edgeasr.tokenizer import Tokenizer

    b = Bundle.load(root)
    be = OrtBackend(b, num_threads=1, providers=["CPUExecutionProvider"])
    if backend_wrapper is not None:
        be = backend_wrapper(be)
    cfg = RecognizerConfig(decoding=DecodingConfig(method="iam-ctc"))
    return Recognizer(be, Tokenizer(b.tokenizer_path), b.features, cfg), be


def test_streaming_equals_whole_utterance_numpy_reference(bundle) -> None:
    """Audio fed in odd-sized pieces through the ONNX bundle decodes to exactly the CTC greedy
    output of the numpy null joint over all the utterance's encoder frames."""
    root, model = bundle
    rec, be = ort_recognizer(root, RecordingBackend)
    # noise bursts switched on and off every 150 ms, so the argmax path changes often (blanks,
    # repeats and several labels), unlike steady noise on which a random model says one thing
    x = 0.2 * np.random.default_rng(5).standard_normal(24000) * ((np.arange(24000) // 2400) % 2)
    x = x.astype(np.float32)
    s = rec.create_stream()
    for a in range(0, len(x), 1234):
        s.accept_waveform(16000, x[a : a + 1234])
        rec.decode_streams([s])
    s.input_finished()
    rec.decode_streams([s])
    result = s.result

    frames = np.concatenate(be.frames, axis=1)[0]
    assert len(be.frames) > 3  # several encoder chunks, so chunk boundaries were crossed
    tokens, starts = ctc_reference(null_joint_argmax(model, frames))
    assert len(tokens) > 3
    assert result.tokens == tokens
    assert result.timestamps == pytest.approx([t * rec.spec.frame_shift_s for t in starts])
    assert result.stats["frames"] == frames.shape[0]
    assert rec.transcribe(x, sample_rate=16000).tokens == tokens


def test_chunking_does_not_change_the_result(bundle) -> None:
    """Any split of the frames into chunks (the torch backend on the bundle's model takes any
    chunk length; the ONNX graph is fixed to C) gives the whole-utterance reference, per
    stream of a batch."""
    from edgeasr.backends.torch import TorchBackend

    _, model = bundle
    be = TorchBackend(model, num_threads=1)
    frames = (2.0 * np.random.default_rng(7).standard_normal((2, 23, be.spec.joint_dim)))
    frames = frames.astype(np.float32)
    refs = [ctc_reference(null_joint_argmax(model, f)) for f in frames]
    assert all(len(tokens) > 3 for tokens, _ in refs)
    dec = IamCtcDecoder(be)
    for chunk in (1, 3, 4, 23):
        states = [dec.init_state(), dec.init_state()]
        for a in range(0, frames.shape[1], chunk):
            dec.decode_chunk(frames[:, a : a + chunk], states)
        dec.finalize(states)
        for s, (tokens, starts) in zip(states, refs, strict=True):
            hyp = dec.best(s)
            assert list(hyp.tokens) == tokens, chunk
            assert list(hyp.frames) == starts, chunk


def test_repeats_across_chunk_boundaries_are_collapsed(bundle) -> None:
    """A token whose frames straddle a chunk boundary is emitted once; the same token after a
    blank frame is a new token, also when the blank ends the previous chunk."""
    root, model = bundle
    rec, be = ort_recognizer(root)
    cand = (2.0 * np.random.default_rng(11).standard_normal((64, be.spec.joint_dim)))
    cand = cand.astype(np.float32)
    best = null_joint_argmax(model, cand)
    blank, tok = cand[np.flatnonzero(best == 0)[0]], cand[np.flatnonzero(best != 0)[0]]
    a = int(best[np.flatnonzero(best != 0)[0]])
    assert be.spec.chunk_frames == 4
    chunks = [
        [blank, blank, blank, tok],  # a starts on frame 3 ...
        [tok, tok, blank, tok],  # ... and continues over the boundary; a again on frame 7
        [tok, blank, blank, blank],  # the run of frame 7 continues: nothing new
        [tok, tok, tok, tok],  # after a blank: a new a on frame 12, then repeats
    ]
    dec = rec.decoder
    st = dec.init_state()
    for k, c in enumerate(chunks):
        dec.decode_chunk(np.stack(c)[None], [st])
        assert st.prev == (a if c[-1] is tok else 0), k
    assert list(dec.best(st).tokens) == [a, a, a]
    assert list(dec.best(st).frames) == [3, 7, 12]
    # an endpoint reset mid-token does not re-emit the token it cut
    nxt = dec.new_segment(st)
    assert dec.best(nxt).tokens == ()
    dec.decode_chunk(np.stack([tok, tok, blank, tok])[None], [nxt])
    assert list(dec.best(nxt).tokens) == [a] and list(dec.best(nxt).frames) == [19]


def test_ctc_collapse_rule() -> None:
    emit, prev = ctc_collapse(np.array([3, 3, 0, 3, 5, 5]), prev=3)
    assert emit.tolist() == [0, 0, 0, 3, 5, 0] and prev == 5
    emit, prev = ctc_collapse(np.array([0, 3]), prev=3)
    assert emit.tolist() == [0, 3] and prev == 3
    emit, prev = ctc_collapse(np.zeros(0, dtype=np.int64), prev=4)
    assert emit.size == 0 and prev == 4


def test_iam_ctc_takes_no_hotwords() -> None:
    with pytest.raises(DecodingError, match="cannot be biased"):
        DecodingConfig(method="iam-ctc", hotwords=("abc",)).validate()
