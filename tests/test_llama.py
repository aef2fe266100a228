"""The Transducer-Llama LM side: the small Llama, its training, vocabulary adaptation, GGUF
export and the llama.cpp runtime predictor (parity with PyTorch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from edgeasr.train.llama.gguf_export import export_gguf, permute_rotary
from edgeasr.train.llama.model import Llama, lm_loss, rotary_tables, tiny_llama_config
from edgeasr.train.llama.train_lm import (
    LMTrainConfig,
    encode_sentences,
    evaluate,
    load_lm,
    save_lm,
    train_lm,
)
from edgeasr.train.llama.vocab_adapt import adapt_vocabulary, segment_piece

from edgeasr.tokenizer import Tokenizer

TEXT = [
    "the cat sat on the mat", "a dog ran in the park", "the bird sang a song",
    "she reads a book every night", "we went to the market on sunday",
    "the children played in the garden", "he drinks coffee in the morning",
    "they watched a movie at home", "the sun rises in the east", "my brother plays the guitar",
] * 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """One torch thread: these models are tiny and the CI machine has 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, Tokenizer]:
    """(ASR tokenizer, V=40; LLM tokenizer, V=64): the LLM one has longer pieces."""
    d = tmp_path_factory.mktemp("tok")
    return Tokenizer.train(TEXT, d / "asr", 40), Tokenizer.train(TEXT, d / "llm", 64)


def _llama(vocab: int, seed: int = 0, **kw: object) -> Llama:
    torch.manual_seed(seed)
    return Llama(tiny_llama_config(vocab_size=vocab, **kw)).eval()


# ------------------------------------------------------------------------------------ model
def test_llama_is_causal_and_label_log_probs_normalized() -> None:
    m = _llama(40)
    x = torch.tensor([[0, 5, 9, 12, 3]])
    logits = m(x)
    assert logits.shape == (1, 5, 40)
    y = x.clone()
    y[0, 4] = 7  # changing the last token leaves earlier outputs unchanged
    torch.testing.assert_close(m(y)[:, :4], logits[:, :4])
    lp = m.label_log_probs(x)
    assert lp.shape == (1, 5, 39)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(1, 5))
    torch.testing.assert_close(lp, torch.log_softmax(logits[..., 1:], -1))
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        m(torch.tensor([[0, 40]]))


def test_tied_and_untied_embeddings() -> None:
    tied, untied = _llama(40), _llama(40, tie_embeddings=False)
    assert tied.output.weight is tied.tok_embeddings.weight
    assert untied.output.weight is not untied.tok_embeddings.weight
    n = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n + 40 * 64


def test_permuted_rotary_matches_interleaved_rope() -> None:
    """Our rotate-half q/k, permuted for GGUF, rotated the llama.cpp way (adjacent pairs), give
    the same attention scores: the convention the exporter relies on."""
    torch.manual_seed(0)
    h, dh, t = 2, 8, 5
    w = torch.randn(h * dh, 16)
    x = torch.randn(t, 16)
    cos, sin = rotary_tables(dh, torch.arange(t), 10000.0)
    q = (x @ w.T).view(t, h, dh)
    half = torch.cat([-q[..., dh // 2 :], q[..., : dh // 2]], -1)
    ours = q * cos[:, None] + half * sin[:, None]
    qp = (x @ torch.from_numpy(permute_rotary(w.numpy(), h)).T).view(t, h, dh)
    a, b = qp[..., 0::2], qp[..., 1::2]  # llama.cpp NORM rope: pairs (2i, 2i+1)
    c, s = cos[:, None, : dh // 2], sin[:, None, : dh // 2]
    theirs = torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)
    # same vectors up to the fixed permutation, so same dot products
    torch.testing.assert_close(ours @ ours.transpose(-1, -2), theirs @ theirs.transpose(-1, -2))
    torch.testing.assert_close(torch.from_numpy(permute_rotary(w.numpy(), h))[1], w[dh // 2])


# ------------------------------------------------------------------------------ training
def test_lm_training_lowers_perplexity_and_checkpoint_roundtrip(
        toks: tuple[Tokenizer, Tokenizer], tmp_path: Path) -> None:
    _, llm_tok = toks
    data = encode_sentences(llm_tok, TEXT, 63)
    m = _llama(64)
    before = evaluate(m, data)
    assert abs(math.log(before) - math.log(64)) < 0.3  # untrained: about uniform
    nll, n = lm_loss(m, torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1]))
    assert n == 4 and float(nll.detach()) / n == pytest.approx(math.log(before), abs=0.3)
    steps, after = train_lm(m, data, data, LMTrainConfig(steps=40, batch_size=8, lr=3e-3,
                                                         warmup=5, eval_every=40))
    assert steps == 40 and after < before / 3
    path = save_lm(tmp_path / "lm.pt", m, llm_tok, step=steps, dev_ppl=after)
    m2, tok2, state = load_lm(path)
    assert state["step"] == 40 and tok2.vocab_size == 64
    assert evaluate(m2, data) == pytest.approx(after, rel=1e-5)


# ------------------------------------------------------------------- vocabulary adaptation
def test_segment_piece_fewest_pieces() -> None:
    vocab = {"▁": 2, "▁t": 3, "h": 4, "e": 5, "▁th": 6, "he": 7}
    assert segment_piece("▁the", vocab) in ([3, 7], [6, 5])  # two pieces, never three
    assert segment_piece("he", vocab) == [7]
    assert segment_piece("▁x", vocab) is None


def test_adapt_vocabulary_rows_are_means(toks: tuple[Tokenizer, Tokenizer]) -> None:
    asr_tok, llm_tok = toks
    llm = _llama(64, tie_embeddings=False)
    adapted, stats = adapt_vocabulary(llm, llm_tok, asr_tok)
    assert adapted.cfg.vocab_size == 40 and sum(stats.values()) == 38
    assert stats["exact"] > 0 and stats["unk"] == 0
    llm_ids = {p: i for i, p in enumerate(llm_tok.pieces())}
    for i, piece in enumerate(asr_tok.pieces()):
        ids = [i] if i < 2 else segment_piece(piece, {p: j for p, j in llm_ids.items() if j > 1})
        assert ids is not None
        torch.testing.assert_close(adapted.tok_embeddings.weight[i],
                                   llm.tok_embeddings.weight[ids].mean(0))
        torch.testing.assert_close(adapted.output.weight[i], llm.output.weight[ids].mean(0))
    # the body is copied unchanged
    torch.testing.assert_close(adapted.layers[1].attention.wq.weight,
                               llm.layers[1].attention.wq.weight)


# ------------------------------------------------------------------------- GGUF + llama.cpp
@pytest.mark.parametrize("tied", [True, False])
def test_gguf_file_layout(tmp_path: Path, toks: tuple[Tokenizer, Tokenizer],
                          tied: bool) -> None:
    gguf = pytest.importorskip("gguf")
    asr_tok, _ = toks
    m = _llama(40, tie_embeddings=tied)
    path = export_gguf(m, asr_tok, tmp_path / "lm.gguf", "q8_0")
    r = gguf.GGUFReader(str(path))
    names = {t.name: t for t in r.tensors}
    assert ("output.weight" in names) != tied
    assert len(names) == 2 + 9 * 2 + (0 if tied else 1)
    q = names["blk.0.attn_q.weight"]
    assert q.tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert names["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    deq = gguf.quants.dequantize(q.data, q.tensor_type)
    ref = permute_rotary(m.layers[0].attention.wq.weight.detach().numpy(), 2)
    np.testing.assert_allclose(deq, ref, atol=np.abs(ref).max() / 100)
    kv = r.fields
    assert bytes(kv["general.architecture"].parts[-1]).decode() == "llama"
    assert int(kv["llama.block_count"].parts[-1][0]) == 2
    assert int(kv["tokenizer.ggml.bos_token_id"].parts[-1][0]) == 0
    with pytest.raises(ValueError, match="adapted"):
        export_gguf(_llama(64), asr_tok, tmp_path / "bad.gguf")


@pytest.fixture(scope="module")
def gguf_pair(tmp_path_factory: pytest.TempPathFactory, toks: tuple[Tokenizer, Tokenizer]
              ) -> tuple[Llama, Path, Path]:
    pytest.importorskip("gguf")
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as e:  # not installed, or installed without its library
        pytest.skip(f"llama-cpp-python unusable: {e}")
    asr_tok, _ = toks
    d = tmp_path_factory.mktemp("gguf")
    m = _llama(40, seed=3, tie_embeddings=False)
    with torch.no_grad():  # non-trivial norms, so a wrong norm mapping would show
        for layer in m.layers:
            layer.attention_norm.weight.uniform_(0.5, 1.5)
    return (m, export_gguf(m, asr_tok, d / "f32.gguf"),
            export_gguf(m, asr_tok, d / "q8.gguf", "q8_0"))


def test_llama_cpp_logits_match_pytorch(gguf_pair: tuple[Llama, Path, Path]) -> None:
    from edgeasr.decoding.llama_predictor import LlamaPredictor

    m, f32, q8 = gguf_pair
    seq = [5, 9, 12, 3, 30, 7, 21, 2, 39, 11]
    ref = m.label_log_probs(torch.tensor([[0, *seq]]))[0].detach().numpy()
    got = LlamaPredictor(f32).score(seq)
    assert got.shape == ref.shape == (11, 39)
    assert np.abs(got - ref).max() <= 1e-3
    got8 = LlamaPredictor(q8).score(seq)
    diff8 = np.abs(got8 - ref).max()
    assert 1e-6 < diff8 < 0.05  # quantized: close, not equal


def test_predictor_states_step_by_step(gguf_pair: tuple[Llama, Path, Path]) -> None:
    from edgeasr.decoding.llama_predictor import LlamaPredictor

    m, f32, _ = gguf_pair
    pred = LlamaPredictor(f32)
    assert pred.num_labels == 39

    def ref(history: tuple[int, ...]) -> np.ndarray:
        return m.label_log_probs(torch.tensor([history]))[0, -1].detach().numpy()

    root = pred.start()
    np.testing.assert_allclose(root.log_probs, ref((0,)), atol=1e-3)
    a = pred.advance(root, 5)
    b = pred.advance(a, 9)
    c = pred.advance(root, 12)  # branch off the root: its KV cache is restored
    d = pred.advance(b, 3)
    e1, e2 = pred.advance_batch([a, c], [7, 7])
    for s in (a, b, c, d, e1, e2):
        np.testing.assert_allclose(s.log_probs, ref(s.tokens), atol=1e-3)
    assert e2.tokens == (0, 12, 7) and d.tokens == (0, 5, 9, 3)
    with pytest.raises(Exception, match="outside the labels"):
        pred.advance(a, 0)
    assert pred.n_ctx == 64  # the trained context, though llama.cpp allocates more
    with pytest.raises(Exception, match="exceeds n_ctx=64"):
        pred.score([5] * 64)


def test_cli_lm_adapt_gguf_end_to_end(tmp_path: Path, toks: tuple[Tokenizer, Tokenizer]) -> None:
    """``edgeasr-train lm`` -> ``lm-adapt`` (both runs) -> ``lm-gguf`` on a tiny text folder."""
    import json

    from edgeasr.train.cli import main

    text = tmp_path / "text"
    text.mkdir()
    (text / "train.txt").write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    (text / "dev.txt").write_text("\n".join(TEXT[:10]) + "\n", encoding="utf-8")
    llm = tmp_path / "llm"
    assert main(["lm", "--text-dir", str(text), "--out", str(llm), "--vocab-size", "64",
                 "--dim", "64", "--layers", "1", "--heads", "2", "--steps", "4",
                 "--eval-every", "2", "--batch-size", "4"]) == 0
    log = [json.loads(x) for x in (llm / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and log[-1]["dev_ppl"] < 64 * 1.5
    asr_tok, _ = toks
    assert main(["lm-adapt", "--llm", str(llm / "lm.pt"), "--asr-tokenizer",
                 str(asr_tok.model_path), "--text-dir", str(text), "--out",
                 str(tmp_path / "asr"), "--steps", "2", "--batch-size", "4"]) == 0
    for run in ("adapted", "direct"):
        rep = json.loads((tmp_path / "asr" / run / "report.json").read_text())
        assert rep["steps"] == 2 and rep["asr_vocab"] == 40 and rep["dev_ppl"] > 1
    pytest.importorskip("gguf")
    out = tmp_path / "lm.gguf"
    assert main(["lm-gguf", str(tmp_path / "asr" / "adapted" / "lm.pt"), "--out", str(out),
                 "--type", "q8_0"]) == 0
    assert out.stat().st_size > 10_000
