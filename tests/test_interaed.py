"""interAED-KD: the BERT-style teacher (train/bert), the auxiliary attention decoders
(train/model/interaed.py), their place in training (fit with a [kd] table) and export (none)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from edgeasr.train.bert.model import BertMLM, tiny_bert_config
from edgeasr.train.bert.train_mlm import (
    MLMTrainConfig,
    batch_tokens,
    evaluate,
    load_mlm,
    masked_accuracy,
    save_mlm,
    single_mask_accuracy,
    train_mlm,
)
from edgeasr.train.model import Transducer, tiny_config
from edgeasr.train.model.interaed import KDConfig, attach_kd, kd_kl

from edgeasr.tokenizer import Tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "we", "call", "it", "bear"]


def _kd_cfg(**overrides: object) -> KDConfig:
    base: dict[str, object] = dict(layers=(1, 2), weights=(1.0, 1.0), alpha=1.0, dec_dim=32,
                                   dec_layers=1, dec_heads=2, dec_ffn_dim=64, dropout=0.0)
    base.update(overrides)
    return KDConfig(**base)  # type: ignore[arg-type]


def _batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(3, 71, 80, generator=g)
    feat_lens = torch.tensor([71, 63, 47])
    targets = torch.randint(1, 16, (3, 6), generator=g)
    target_lens = torch.tensor([6, 4, 2])
    return feats, feat_lens, targets, target_lens


# ---------------------------------------------------------------------------- KL and accuracy
def test_kl_is_zero_when_student_equals_teacher_and_matches_definition() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 5, 15, generator=g) * 3
    s = torch.randn(2, 5, 15, generator=g) * 3
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert float(kd_kl(t, t, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_kl(t, t, mask, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)
    pt, ps = torch.softmax(t, -1), torch.softmax(s, -1)
    manual = (pt * (pt.log() - ps.log())).sum(-1)[mask].mean()
    assert float(kd_kl(s, t, mask)) == pytest.approx(float(manual), rel=1e-5)
    # padding positions do not count, whatever they hold
    s2 = s.clone()
    s2[0, 3:] = 100.0
    assert float(kd_kl(s2, t, mask)) == pytest.approx(float(manual), rel=1e-5)


def test_masked_accuracy_on_crafted_logits() -> None:
    logits = torch.full((1, 4, 5), -1.0)
    logits[0, 0, 2] = logits[0, 1, 0] = logits[0, 2, 4] = logits[0, 3, 1] = 1.0  # ids 3,1,5,2
    targets = torch.tensor([[3, 2, 5, 9]])
    selected = torch.tensor([[True, True, True, False]])
    assert masked_accuracy(logits, targets, selected) == (2, 3)


def test_teacher_accuracy_on_a_crafted_model() -> None:
    """A teacher whose every prediction is token 5 (zero embeddings, bias on label 5): masked
    accuracy is exactly the share of 5s among the masked tokens, both 15%-style (here every
    token masked) and one-at-a-time."""
    model = BertMLM(tiny_bert_config())
    with torch.no_grad():
        model.embed.weight.zero_()
        model.out_bias.zero_()
        model.out_bias[5 - 1] = 4.0
    data = [[5, 5, 5, 7], [5, 7], [9]]
    metrics = evaluate(model, data, mask_prob=1.0)
    assert metrics["tokens"] == 7
    assert metrics["acc15"] == pytest.approx(4 / 7)
    assert single_mask_accuracy(model, data) == pytest.approx(4 / 7)


def test_position_logits_mask_exactly_one_token() -> None:
    torch.manual_seed(0)
    model = BertMLM(tiny_bert_config()).eval()
    tokens, lengths = batch_tokens([[3, 4, 5, 6], [7, 8]])
    soft = model.position_logits(tokens, lengths)
    assert soft.shape == (2, 4, 15)
    copy = torch.tensor([[7, 16, 0, 0]])  # sentence 2, position 1 masked (16 = [MASK])
    want = model(copy, torch.tensor([2]))[0, 1]
    torch.testing.assert_close(soft[1, 1], want)
    assert torch.equal(soft[1, 2:], torch.zeros(2, 15))  # padding rows
    torch.testing.assert_close(model.position_logits(tokens, lengths, max_rows=2), soft)
    # the prediction at i does not see token i, it does see the others
    other = tokens.clone()
    other[0, 2] = 9
    assert torch.allclose(model.position_logits(other, lengths)[0, 2], soft[0, 2], atol=1e-6)
    assert not torch.allclose(model.position_logits(other, lengths)[0, 1], soft[0, 1])


def test_mlm_training_learns_and_checkpoint_roundtrips(tmp_path: Path) -> None:
    """Sentences "a b c d" with a fixed successor rule: the masked token is predictable from
    its neighbours, so held-out accuracy must go far above chance (1/15)."""
    rng = np.random.default_rng(0)
    data = [[int(s + k) % 14 + 2 for k in range(5)] for s in rng.integers(0, 14, 400)]
    torch.manual_seed(0)
    model = BertMLM(tiny_bert_config())
    cfg = MLMTrainConfig(steps=60, batch_size=16, lr=5e-3, warmup=5, eval_every=60,
                         eval_sentences=50)
    step, metrics = train_mlm(model, data[:300], data[300:350], cfg)
    assert step == 60
    assert metrics["acc15"] > 0.4 and metrics["acc1"] > 0.4  # chance: 1/15
    tok = Tokenizer.train(WORDS * 5, tmp_path / "tok", vocab_size=24)
    save_mlm(tmp_path / "mlm.pt", model, tok, step=step, dev=metrics)
    loaded, tok2, state = load_mlm(tmp_path / "mlm.pt")
    assert tok2.model_bytes == tok.model_bytes and state["step"] == 60
    assert evaluate(loaded, data[300:350]) == evaluate(model, data[300:350])


# ---------------------------------------------------------------------------- student side
def test_kd_parts_and_loss_decreases_on_a_tiny_run() -> None:
    torch.manual_seed(0)
    teacher = BertMLM(tiny_bert_config())
    with torch.no_grad():  # a peaked, non-trivial teacher
        teacher.embed.weight.mul_(40)
    model = Transducer(tiny_config())
    kd = attach_kd(model, _kd_cfg(weights=(0.5, 1.0)), teacher=teacher)
    batch = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        out = model(*batch, chunk_size=-1)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append(out.parts)
    assert {"transducer", "iam_ctc", "kd", "kd_kl_l1", "kd_kl_l2"} <= set(history[0])
    first = history[0]
    assert float(first["kd"]) == pytest.approx(
        0.5 * float(first["kd_kl_l1"]) + float(first["kd_kl_l2"]), rel=1e-5)
    assert float(history[-1]["kd"]) < 0.5 * float(first["kd"])
    # the teacher is frozen and outside the module tree
    assert not any(n.startswith("kd.teacher") for n, _ in model.named_parameters())
    assert all(not p.requires_grad for p in kd.teacher.mlm.parameters())
    # gradients reach the encoder through the tapped layer's cross-attention
    model.zero_grad()
    kd_only, _ = kd(_taps(model, batch), torch.tensor([15, 13, 9]), batch[2], batch[3])
    kd_only.backward()
    assert model.encoder.layers[0].ff1.lin1.weight.grad.abs().sum() > 0


def _taps(model: Transducer, batch: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    taps: list[torch.Tensor] = []
    model.encoder(batch[0], batch[1], chunk_size=-1, layer_outputs=taps)
    return taps


def test_encoder_taps_do_not_change_its_output() -> None:
    torch.manual_seed(0)
    model = Transducer(tiny_config()).eval()
    feats, feat_lens, _, _ = _batch()
    taps: list[torch.Tensor] = []
    e1, _ = model.encoder(feats, feat_lens, chunk_size=4, layer_outputs=taps)
    e2, _ = model.encoder(feats, feat_lens, chunk_size=4)
    assert torch.equal(e1, e2) and len(taps) == 2
    torch.testing.assert_close(model.encoder.out_proj(model.encoder.out_norm(taps[-1])), e1)


def test_kd_config_errors() -> None:
    model = Transducer(tiny_config())
    teacher = BertMLM(tiny_bert_config())
    with pytest.raises(ValueError, match=r"kd.layers \[3\] outside 1..2"):
        attach_kd(model, _kd_cfg(layers=(3,), weights=(1.0,)), teacher=teacher)
    with pytest.raises(ValueError, match="one weight per layer"):
        attach_kd(model, _kd_cfg(weights=(1.0,)), teacher=teacher)
    with pytest.raises(ValueError, match="vocab_size 20 != model vocab_size 16"):
        attach_kd(model, _kd_cfg(), teacher=BertMLM(tiny_bert_config(vocab_size=20)))
    with pytest.raises(ValueError, match="kd.layer_weights"):
        KDConfig.from_dict({"layers": [1], "layer_weights": [1.0]})
    with pytest.raises(ValueError, match="kd.teacher: path"):
        attach_kd(model, _kd_cfg())
    assert model.kd is None
    assert KDConfig.from_dict({"layers": [1, 2], "weights": [0.3, 0.7]}).layers == (1, 2)


# ---------------------------------------------------------------------------- export
def _signature(path: Path) -> dict[str, object]:
    m = onnx.load(str(path))

    def io(values: object) -> list[tuple[str, int, list[object]]]:
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]  # type: ignore[attr-defined]

    return {"inputs": io(m.graph.input), "outputs": io(m.graph.output),
            "initializers": sorted((i.name, tuple(i.dims)) for i in m.graph.initializer),
            "nodes": len(m.graph.node)}


@pytest.mark.slow
def test_kd_decoders_leave_exported_graphs_identical(tmp_path: Path) -> None:
    """Export the encoder (the graph with the layer taps) of a KD-trained model (decoders
    attached) and of the same weights loaded into a plain model, as export does from a
    checkpoint: same signature, same initializers, same bytes. (The predictor and joint graphs
    are built from modules KD never touches.)"""
    from edgeasr.export.graphs import build_graphs
    from edgeasr.export.onnx import export_onnx

    torch.manual_seed(0)
    student = Transducer(tiny_config())
    attach_kd(student, _kd_cfg(), teacher=BertMLM(tiny_bert_config()))
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    out = student(*_batch())
    out.loss.backward()
    opt.step()
    state = student.state_dict()
    assert any(k.startswith("kd.decoders.") for k in state)
    plain = Transducer(tiny_config())
    plain.load_state_dict(state)  # kd.* dropped by the load hook, strict otherwise
    assert plain.kd is None and not any(k.startswith("kd.") for k in plain.state_dict())
    sizes = {}
    for name, model in (("kd", student), ("plain", plain)):
        path = export_onnx(build_graphs(model)["encoder"], tmp_path / name / "encoder.onnx")
        sizes[name] = (path.stat().st_size, _signature(path), path.read_bytes())
    assert sizes["kd"][0] == sizes["plain"][0]
    assert sizes["kd"][1] == sizes["plain"][1]
    assert sizes["kd"][2] == sizes["plain"][2]
    signature = sizes["kd"][1]
    assert [i[0] for i in signature["inputs"]] == [  # type: ignore[index]
        "features", "attn_cache", "conv_cache", "processed_frames"]
    kd_params = sum(p.numel() for p in student.kd.parameters())  # type: ignore[union-attr]
    assert kd_params > 0


# ---------------------------------------------------------------------------- in the recipe
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 speech-like wavs with word transcripts, a tokenizer, and a tiny trained teacher."""
    root = tmp_path_factory.mktemp("kdcorpus")
    rng = np.random.default_rng(0)
    lines, texts = [], []
    for i in range(6):
        dur = 0.6 + 0.1 * i
        t = np.arange(int(dur * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (120 + 10 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / f"u{i}.wav", x.astype(np.float32), 16000)
        text = " ".join(rng.choice(WORDS, size=2 + i % 3))
        texts.append(text)
        lines.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "duration": dur})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    tok = Tokenizer.train([*texts, *WORDS] * 3, root / "tok", vocab_size=24)
    teacher = BertMLM(tiny_bert_config(vocab_size=tok.vocab_size))
    save_mlm(root / "mlm.pt", teacher, tok, step=0)
    return {"train": root / "train.jsonl", "tokenizer": root / "tok.model",
            "teacher": root / "mlm.pt"}


def test_fit_with_kd_table_logs_kd_and_exports_plain(corpus: dict[str, Path],
                                                     tmp_path: Path) -> None:
    from edgeasr.train.checkpoint import load_checkpoint, load_for_inference
    from edgeasr.train.config import load_config
    from edgeasr.train.fit import fit

    cfg = load_config(CONFIGS / "tiny.toml", [
        f"tokenizer={json.dumps(str(corpus['tokenizer']))}",
        f'data.train=[{{manifest={json.dumps(str(corpus["train"]))}}}]',
        "data.valid=[]", "loop.max_steps=3", "loop.log_every=1", "loop.cmvn_utts=0",
        f"kd.teacher={json.dumps(str(corpus['teacher']))}", "kd.layers=[1, 2]",
        "kd.weights=[0.3, 0.3]", "kd.alpha=0.5", "kd.dec_dim=32", "kd.dec_heads=2",
        "kd.dec_ffn_dim=64",
    ])
    exp = tmp_path / "exp"
    fit(cfg, exp)
    records = [json.loads(x) for x in (exp / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 3
    assert {"kd", "kd_kl_l1", "kd_ce_l2"} <= set(train[0]["parts"])
    ckpt = sorted(exp.glob("*.pt"))[-1]
    state = load_checkpoint(ckpt)
    assert any(k.startswith("kd.decoders.l2.") for k in state["model"])  # exact resume
    assert not any(k.startswith("kd.teacher") for k in state["model"])
    model, _, _ = load_for_inference(ckpt)
    assert model.kd is None
