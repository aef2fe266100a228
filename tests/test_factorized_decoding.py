"""Factorized (Transducer-Llama) decoding in the streaming runtime: greedy and beam search with
an LM state per hypothesis, on the numpy toy backend and end to end with llama.cpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_decoding import ToyBackend, random_frames, run, same

from edgeasr.backends.base import BackendError
from edgeasr.decoding import (
    DecodingConfig,
    DecodingError,
    FactorizedLabels,
    GreedyDecoder,
    ModifiedBeamSearchDecoder,
    make_decoder,
)
from edgeasr.decoding.base import full_logprobs, log_softmax
from edgeasr.decoding.llama_predictor import (
    BOS_ID,
    LMState,
    factorized_label_log_probs,
    history_window,
)


class ToyLM:
    """Deterministic numpy label LM: the next-label log-probs are a random row per last token
    (peaked, so the LM visibly changes decisions); counts the histories it extends."""

    def __init__(self, vocab_size: int = 6, seed: int = 5, scale: float = 3.0) -> None:
        rng = np.random.default_rng(seed)
        self.table = log_softmax(scale * rng.normal(size=(vocab_size, vocab_size - 1)))
        self.extended: list[tuple[int, ...]] = []

    @property
    def num_labels(self) -> int:
        return self.table.shape[1]

    def start(self) -> LMState:
        return LMState((BOS_ID,), self.table[BOS_ID], None)

    def advance_batch(self, states, tokens) -> list[LMState]:
        out = []
        for s, t in zip(states, tokens, strict=True):
            assert 0 < t <= self.num_labels
            out.append(LMState(s.tokens + (t,), self.table[t], None))
            self.extended.append(out[-1].tokens)
        return out


def reference_factorized_greedy(be: ToyBackend, lm: ToyLM, frames: np.ndarray,
                                weight: float) -> list[int]:
    """One symbol per frame, written out directly: HAT blank from the predictor, labels from
    ``log_softmax(iam labels + weight * LM)``."""
    _, am, _ = be.iam_joint(frames)
    ctx, last, out = [0, 0], BOS_ID, []
    for t in range(frames.shape[1]):
        p = be.predictor(np.asarray([ctx], dtype=np.int64))
        _, b, _ = be.joint_blank(frames[:, t], p)
        labels = factorized_label_log_probs(am[:, t], lm.table[last][None], weight)
        tok = int(np.argmax(full_logprobs(b, labels)[0]))
        if tok:
            out.append(tok)
            ctx, last = [ctx[1], tok], tok
    return out


@pytest.mark.parametrize("weight", [0.0, 0.8])
def test_factorized_greedy_matches_reference_and_beam_one(weight: float) -> None:
    be, lm = ToyBackend(), ToyLM()
    frames = random_frames(1, 24)
    greedy = GreedyDecoder(be, labels=FactorizedLabels(lm, weight))
    ref = reference_factorized_greedy(be, lm, frames, weight)
    assert len(ref) >= 4
    for chunk in (None, 3, 5):
        assert list(run(greedy, frames, chunk)[1][0].tokens) == ref
        beam1 = ModifiedBeamSearchDecoder(be, beam=1, labels=FactorizedLabels(lm, weight))
        assert list(run(beam1, frames, chunk)[1][0].tokens) == ref


def test_lm_changes_the_result_and_weight_zero_is_the_iam() -> None:
    """With weight 0 the labels are the IAM label head's; a peaked LM changes the tokens."""
    be, lm = ToyBackend(), ToyLM()
    frames = random_frames(1, 24)
    iam_only = reference_factorized_greedy(be, lm, frames, 0.0)
    with_lm = reference_factorized_greedy(be, lm, frames, 2.0)
    assert iam_only != with_lm
    hat = run(GreedyDecoder(be), frames)[1][0].tokens
    assert list(hat) != with_lm


def test_factorized_beam_is_chunk_invariant_and_batched() -> None:
    be = ToyBackend()
    frames = random_frames(3, 20, seed=4)
    results = []
    for chunk in (None, 4, 7):
        dec = ModifiedBeamSearchDecoder(be, beam=4, labels=FactorizedLabels(ToyLM(), 1.0))
        results.append(run(dec, frames, chunk)[1])
    assert same(results[0], results[1]) and same(results[0], results[2])
    assert any(h.tokens for h in results[0])
    # batching streams does not change any of them
    for n in range(3):
        dec = ModifiedBeamSearchDecoder(be, beam=4, labels=FactorizedLabels(ToyLM(), 1.0))
        assert same(run(dec, frames[n : n + 1])[1], [results[0][n]])


def test_new_segment_restarts_the_lm_history() -> None:
    be, lm = ToyBackend(), ToyLM()
    frames = random_frames(1, 24)
    for dec in (GreedyDecoder(be, labels=FactorizedLabels(lm)),
                ModifiedBeamSearchDecoder(be, beam=3, labels=FactorizedLabels(lm))):
        st = dec.init_state()
        dec.decode_chunk(frames, [st])
        assert dec.best(st).tokens
        nxt = dec.new_segment(st)
        lm_state = nxt.lm if hasattr(nxt, "lm") else nxt.hyps[0].lm
        assert lm_state.tokens == (BOS_ID,)


def test_history_window() -> None:
    assert history_window((0, 1, 2), 4) == (0, 1, 2)
    assert history_window((0, 1, 2, 3, 4), 5) == (0, 1, 2, 3, 4)
    assert history_window((0, 1, 2, 3, 4, 5), 5) == (0, 4, 5)  # BOS + last n_ctx // 2
    with pytest.raises(BackendError, match="cannot hold"):
        history_window((0, 1), 1)


def test_config_errors_are_named() -> None:
    be = ToyBackend()
    with pytest.raises(DecodingError, match="needs lm"):
        DecodingConfig(predictor="llama").validate()
    with pytest.raises(DecodingError, match="unknown predictor"):
        DecodingConfig(predictor="gpt").validate()
    with pytest.raises(DecodingError, match="one history per hypothesis"):
        DecodingConfig(method="nar", predictor="llama", lm="x.gguf").validate()
    with pytest.raises(DecodingError, match="one history per hypothesis"):
        make_decoder(be, DecodingConfig(method="viterbi"), lm=ToyLM())
    with pytest.raises(DecodingError, match="predicts 6 labels but the model has 5"):
        make_decoder(be, DecodingConfig(method="beam"), lm=ToyLM(vocab_size=7))
    with pytest.raises(DecodingError, match="lm_weight"):
        DecodingConfig(lm_weight=-1).validate()
    dec = make_decoder(be, DecodingConfig(method="gated", lm_weight=0.5), lm=ToyLM())
    assert dec.labels is not None and dec.labels.lm_weight == 0.5


# ------------------------------------------------------------------- llama.cpp end to end
@pytest.fixture(scope="module")
def llama_bundle(tiny_bundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny exported ONNX bundle (V = 16), a tiny Llama on its vocabulary with peaked output
    (so the LM decides tokens) and its f32 GGUF."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("gguf")
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as e:
        pytest.skip(f"llama-cpp-python unusable: {e}")
    from edgeasr.train.llama.gguf_export import export_gguf
    from edgeasr.train.llama.model import Llama, tiny_llama_config

    from edgeasr.tokenizer import Tokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fbundle")
    bundle, model = tiny_bundle()
    tok = Tokenizer(bundle / "tok.model")
    torch.manual_seed(7)
    llama = Llama(tiny_llama_config(vocab_size=16, tie_embeddings=False)).eval()
    with torch.no_grad():
        llama.output.weight.mul_(60.0)
    gguf = export_gguf(llama, tok, root / "lm.gguf")
    return {"bundle": bundle, "model": model, "llama": llama, "gguf": gguf, "tok": tok}


def _torch_recognizer(env: dict[str, object], method: str, beam: int = 4):
    from edgeasr.backends.torch import TorchBackend
    from edgeasr.backends.torch_lm import TorchLabelLM
    from edgeasr.stream import Recognizer, RecognizerConfig

    cfg = RecognizerConfig(decoding=DecodingConfig(method=method, beam_size=beam,
                                                   max_symbols_per_frame=1))
    return Recognizer(TorchBackend(env["model"]), env["tok"], config=cfg,
                      lm=TorchLabelLM(env["llama"]))


def test_llama_cpp_streaming_equals_torch_predictor_and_beam_one_equals_greedy(
        llama_bundle: dict[str, object], speech_files: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """``edgeasr transcribe --predictor llama`` (ONNX bundle + llama.cpp) gives the PyTorch
    predictor's greedy transcript; beam 1 gives the greedy one; beam 4 runs."""
    from edgeasr.cli import main
    from edgeasr.stream import Recognizer

    env = llama_bundle
    wav = speech_files[0]
    ref = _torch_recognizer(env, "greedy").transcribe(wav)
    assert len(ref.tokens) >= 3
    hat = Recognizer.from_bundle(env["bundle"], decoding=DecodingConfig(
        method="greedy", max_symbols_per_frame=1)).transcribe(wav)
    assert hat.tokens != ref.tokens  # the LM takes part in the decisions
    texts = {}
    for method, beam in (("greedy", 4), ("beam", 1), ("beam", 4)):
        args = ["transcribe", str(wav), "--bundle", str(env["bundle"]), "--predictor", "llama",
                "--lm", str(env["gguf"]), "--decoding", method, "--beam-size", str(beam),
                "--max-symbols", "1", "--json"]
        assert main(args) == 0
        import json

        texts[method, beam] = json.loads(capsys.readouterr().out)["tokens"]
    assert texts["greedy", 4] == ref.tokens
    assert texts["beam", 1] == ref.tokens
    torch_beam = _torch_recognizer(env, "beam", 4).transcribe(wav)
    assert texts["beam", 4] == torch_beam.tokens


def test_llama_cpp_history_window_matches_torch(llama_bundle: dict[str, object]) -> None:
    """Past the trained context (64) both predictors restart at BOS + the last 32 labels."""
    from edgeasr.backends.torch_lm import TorchLabelLM
    from edgeasr.decoding.llama_predictor import LlamaPredictor

    cpp, ref = LlamaPredictor(llama_bundle["gguf"]), TorchLabelLM(llama_bundle["llama"])
    a, b = cpp.start(), ref.start()
    rng = np.random.default_rng(0)
    for i, tok in enumerate(rng.integers(1, 16, size=70)):
        a, (b,) = cpp.advance(a, int(tok)), ref.advance_batch([b], [int(tok)])
        assert a.tokens == b.tokens and len(a.tokens) <= 64
        np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-3, err_msg=str(i))
    assert a.tokens[0] == BOS_ID and len(a.tokens) < 64
