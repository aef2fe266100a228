"""HENT-SRT model: streaming equals full forward for both encoders, CR-CTC behaves, a tiny model
trains (loss decreases), stage-2 init from a stage-1 ASR state, config round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgeasr.train.losses.crctc import consistency_loss, cr_ctc_loss  # noqa: E402
from edgeasr.train.model import EncoderCaches, Transducer  # noqa: E402
from edgeasr.train.model.hierarchical import (  # noqa: E402
    HierarchicalConfig,
    HierarchicalTransducer,
    st_greedy_decode,
    tiny_hierarchical_config,
)

CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("downsample", [1, 2])
def test_streaming_equals_full_forward_for_both_encoders(downsample: int) -> None:
    torch.manual_seed(0)
    cfg = tiny_hierarchical_config(downsample=downsample)
    model = HierarchicalTransducer(cfg).eval()
    c, chunks = cfg.asr.chunk_size, 5  # 5 chunks > left contexts: cache eviction is exercised
    feats = torch.randn(2, 4 * c * chunks + 7, cfg.asr.feature_dim)
    lens = torch.full((2,), feats.shape[1])
    with torch.no_grad():
        e, e_lens, s, s_lens = model.encode(feats, lens, chunk_size=c)
        asr_c = EncoderCaches.init(2, cfg.asr)
        st_c = model.st_encoder.init_caches(2)
        es, ss = [], []
        for k in range(chunks):
            x = feats[:, 4 * c * k : 4 * c * k + 4 * c + 7]
            ek, sk, asr_c, st_c = model.forward_chunk(x, asr_c, st_c)
            es.append(ek)
            ss.append(sk)
    assert e.shape == (2, c * chunks, cfg.asr.joint_dim)
    assert s.shape == (2, c * chunks // downsample, cfg.st.joint_dim)
    assert int(s_lens[0]) == c * chunks // downsample
    assert (torch.cat(es, 1) - e).abs().max() <= 1e-4
    assert (torch.cat(ss, 1) - s).abs().max() <= 1e-4
    assert st_c.processed_frames.tolist() == [c * chunks // downsample] * 2


def test_consistency_loss_zero_for_identical_views_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 6, 5, generator=gen).log_softmax(-1).requires_grad_()
    b = torch.randn(2, 6, 5, generator=gen).log_softmax(-1).requires_grad_()
    lens = torch.tensor([6, 4])
    assert float(consistency_loss(a, a.detach().clone(), lens).detach()) == pytest.approx(
        0.0, abs=1e-7)
    cr = consistency_loss(a, b, lens)
    assert float(cr.detach()) > 0.01
    cr.backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    # padding frames (beyond lens) get no gradient and do not count
    assert a.grad[1, 4:].abs().max() == 0
    c = b.detach().clone()
    c[1, 4:] = torch.randn(2, 5, generator=gen).log_softmax(-1)
    same = consistency_loss(a, c, lens).detach()
    assert float(same) == pytest.approx(float(cr.detach()), abs=1e-6)


def test_cr_ctc_combines_ctc_of_both_views() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 8, 6, generator=gen).log_softmax(-1)
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])
    out = cr_ctc_loss(a, a.clone(), targets, torch.tensor([3, 2]), torch.tensor([8, 7]))
    assert float(out.cr) == pytest.approx(0.0, abs=1e-7)
    assert float(out.ctc) > 0


def _batch(cfg: HierarchicalConfig, gen: torch.Generator):
    feats = torch.randn(3, 4 * 16 + 7, cfg.asr.feature_dim, generator=gen)
    lens = torch.tensor([71, 71, 55])
    y = torch.randint(1, cfg.asr.vocab_size, (3, 4), generator=gen)
    z = torch.randint(1, cfg.st.vocab_size, (3, 3), generator=gen)
    return feats, lens, y, torch.tensor([4, 3, 2]), z, torch.tensor([3, 3, 1])


def test_tiny_model_trains_loss_decreases_all_terms_reported() -> None:
    torch.manual_seed(0)
    cfg = tiny_hierarchical_config()
    model = HierarchicalTransducer(cfg).train()
    gen = torch.Generator().manual_seed(0)
    batch = _batch(cfg, gen)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        torch.manual_seed(1)  # same SpecAugment views and chunk size each step
        out = model(*batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert set(out.parts) >= {"asr_transducer", "st_transducer", "st_simple", "st_pruned",
                              "asr_ctc", "asr_cr", "st_ctc", "st_cr"}
    assert losses[-1] < 0.8 * losses[0], losses
    # every ST parameter got a gradient (the ST head and the ST encoder are both trained)
    for name, p in model.named_parameters():
        if name.startswith(("st_encoder", "st_head")):
            assert p.grad is not None, name


def test_single_view_when_cr_disabled_and_eval_mode_is_deterministic() -> None:
    torch.manual_seed(0)
    cfg = tiny_hierarchical_config(cr_weight=0.0, loss="full")
    model = HierarchicalTransducer(cfg).train()
    out = model(*_batch(cfg, torch.Generator().manual_seed(0)))
    assert "asr_cr" not in out.parts and "st_pruned" not in out.parts
    model.eval()
    b = _batch(cfg, torch.Generator().manual_seed(0))
    assert float(model(*b).loss) == float(model(*b).loss)


def test_stage2_init_from_stage1_asr_and_blank_penalty_in_reference_decoder() -> None:
    torch.manual_seed(0)
    cfg = tiny_hierarchical_config()
    stage1 = Transducer(cfg.asr)
    model = HierarchicalTransducer.from_asr_checkpoint_state(cfg, stage1.state_dict())
    for k, v in stage1.state_dict().items():
        assert torch.equal(model.asr.state_dict()[k], v)
    feats = torch.randn(1, 4 * 16 + 7, 80)
    lens = torch.tensor([feats.shape[1]])
    never_blank = st_greedy_decode(model, feats, lens, blank_penalty=1e4, max_symbols_per_frame=2)
    always_blank = st_greedy_decode(model, feats, lens, blank_penalty=-1e4)
    assert len(never_blank[0]) == 2 * (16 // cfg.st.downsample)
    assert always_blank == [[]]


def test_stage1_may_be_a_tdt_full_loss_asr_checkpoint() -> None:
    """The shipped default model (TDT durations, full loss) starts a pruned RNN-T stage 2: the
    duration head is dropped, the pruned loss's projections start fresh, every other weight is
    stage 1's; a different network shape is a ConfigError naming the fields."""
    from edgeasr.train.config import ConfigError
    from edgeasr.train.warm_start import warm_start_state

    torch.manual_seed(0)
    cfg = tiny_hierarchical_config(asr_overrides={"loss": "pruned"})
    tdt_cfg = dataclasses.replace(cfg.asr, durations=(0, 1, 2), loss="full", mask_prob=0.25)
    stage1 = Transducer(tdt_cfg)
    init = {"model_config": tdt_cfg.to_dict(), "model": stage1.state_dict()}
    model = HierarchicalTransducer(cfg)
    state, notes = warm_start_state(init, model.asr, "stage1.pt")
    model.asr.load_state_dict(state)  # strict: complete and nothing extra
    for k, v in stage1.state_dict().items():
        if not k.startswith("joint.duration_head."):
            assert torch.equal(model.asr.state_dict()[k], v), k
    assert any("duration head" in n for n in notes)
    assert any("simple_am/lm_proj" in n for n in notes)
    assert any("mask_prob" in n for n in notes)
    wide = dataclasses.replace(tdt_cfg, d_model=tdt_cfg.d_model * 2)
    with pytest.raises(ConfigError, match="d_model"):
        warm_start_state({"model_config": wide.to_dict(), "model": {}}, model.asr, "x.pt")


def test_config_round_trip_and_clear_errors() -> None:
    cfg = tiny_hierarchical_config()
    assert HierarchicalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="multiples of st.downsample"):
        tiny_hierarchical_config(downsample=3)
    with pytest.raises(ValueError, match="unknown StHeadConfig keys"):
        HierarchicalConfig.from_dict({**cfg.to_dict(), "st": {"bogus": 1}})


@pytest.mark.slow  # ~35 s on a loaded 2-core machine (dataset, 3 steps, validation decode)
def test_stage2_driver_trains_from_stage1_and_validates_bleu(tmp_path) -> None:
    """``edgeasr-train st``: tiny parallel manifest, stage-1 init, a few steps, BLEU/chrF in the
    validation record, a checkpoint that loads back for export."""
    import json

    import numpy as np
    import soundfile as sf

    pytest.importorskip("sacrebleu")
    from edgeasr.train.checkpoint import save_checkpoint
    from edgeasr.train.corpus.parallel import normalize_spanish
    from edgeasr.train.st import StTrainer, load_st_config, load_st_model

    from edgeasr.tokenizer import Tokenizer

    en = ["the lord is my shepherd", "god said let there be light", "blessed are the meek"]
    es = ["El Señor es mi pastor.", "Y dijo Dios: Sea la luz.", "Bienaventurados los mansos."]
    rng = np.random.default_rng(0)
    rows = []
    for i, (e, s) in enumerate(zip(en * 2, es * 2, strict=True)):
        sf.write(tmp_path / f"u{i}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32),
                 16000)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": e, "duration": 1.0,
                     "translation": s})
    rows.append({"id": "x", "audio": "u0.wav", "text": en[0], "duration": 1.0})  # no pair
    (tmp_path / "par.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    Tokenizer.train(en, tmp_path / "en", 30)
    Tokenizer.train([normalize_spanish(s) for s in es], tmp_path / "es", 30)
    cfg, st = load_st_config(CONFIGS / "hent_srt_stage2.toml", [
        f"tokenizer={tmp_path / 'en.model'}", f"st.tokenizer={tmp_path / 'es.model'}",
        f"data.train=[{{manifest = \"{tmp_path / 'par.jsonl'}\"}}]",
        f"data.valid=[{{manifest = \"{tmp_path / 'par.jsonl'}\", name = \"dev\"}}]",
        "data.max_duration=4.0", "data.max_utt_duration=2.0", "data.num_workers=0",
        "data.valid_max_utts=2", "loop.max_steps=3", "loop.amp=\"none\"", "loop.log_every=1",
        "loop.threads=1", "loop.checkpoint_every_minutes=0", "optim.warmup_steps=1",
        *(f"model.{k}={v}" for k, v in (("d_model", 16), ("num_layers", 1), ("num_heads", 2),
                                        ("ffn_dim", 32), ("conv_kernel", 3), ("left_context", 4),
                                        ("chunk_size", 4), ("train_chunk_sizes", "[2, 4]"),
                                        ("joint_dim", 16), ("predictor_dim", 16),
                                        ("subsampling_channels", 4))),
        *(f"st.model.{k}={v}" for k, v in (("d_model", 16), ("num_layers", 1), ("num_heads", 2),
                                           ("ffn_dim", 32), ("conv_kernel", 3),
                                           ("left_context", 2), ("joint_dim", 16),
                                           ("predictor_dim", 16), ("prune_range", 3))),
    ])
    # stage 1 stand-in: a Transducer checkpoint of the ASR half
    from edgeasr.train.model import ModelConfig

    asr_cfg = ModelConfig.from_dict({"vocab_size": 30, **cfg.model})
    stage1 = Transducer(asr_cfg)
    save_checkpoint(tmp_path / "stage1.pt", {
        "model_config": asr_cfg.to_dict(), "model": stage1.state_dict(),
        "tokenizer": (tmp_path / "en.model").read_bytes(), "train_config": {},
        "feature_config": {}})
    st.init = str(tmp_path / "stage1.pt")
    trainer = StTrainer(cfg, st, tmp_path / "exp")
    assert len(trainer.train_set) == 6  # the row without a translation is dropped
    assert torch.equal(trainer.model.asr.encoder.out_proj.weight, stage1.encoder.out_proj.weight)
    result = trainer.train()
    assert trainer.step == 3
    dev = result["dev"]
    assert {"bleu", "chrf", "length_ratio", "wer"} <= set(dev)
    assert 0.0 <= dev["bleu"] <= 100.0
    logs = [json.loads(x) for x in (tmp_path / "exp/log.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if r["kind"] == "train"]
    assert len(train_logs) == 3 and "st_pruned" in train_logs[0]["parts"]
    ckpt = sorted((tmp_path / "exp").glob("*.pt"))[-1]
    model, tok, st_tok, _ = load_st_model(ckpt)
    assert st_tok == (tmp_path / "es.model").read_bytes()
    assert model.cfg.st.vocab_size == 30


def test_parallel_text_normalization_pairing_and_manifest_translation(tmp_path) -> None:
    import json
    import shutil

    from edgeasr.train.corpus.parallel import (
        ParallelPair,
        attach_translations,
        normalize_spanish,
        pair_sentences,
        read_bible_pairs,
        sentence_pool,
    )

    assert normalize_spanish("Y dijo Dios: Sea la luz; y fué la luz.") == \
        "y dijo dios sea la luz y fué la luz"
    assert normalize_spanish("¿Dónde está, Señor?") == "dónde está señor"
    assert normalize_spanish("él es carne <H7683>: mas serán") == "él es carne mas serán"
    # equal sentence counts: split into sentence pairs; unequal: the verse stays whole
    two = pair_sentences("Gen 1:1", "God said it. It was 2 days.", "Dijo Dios. Fueron dos días.")
    assert [(p.en, p.es, p.key) for p in two] == [
        ("god said it", "dijo dios", "Gen 1:1#0"), ("it was two days", "fueron dos días",
                                                   "Gen 1:1#1")]
    one = pair_sentences("Gen 1:2", "A b c. D e.", "A b c d e.")
    assert len(one) == 1 and one[0].key == "Gen 1:2"
    pairs = [ParallelPair("the lord is good", "el señor es bueno", "k1"),
             ParallelPair("the lord is good", "bueno es el señor", "k2"),
             ParallelPair("amen", "amén", "k3")]
    pool = sentence_pool(pairs)
    assert sum(len(v) for v in pool.splits.values()) == 1
    assert pool.dropped == {"duplicate": 1, "length": 1}
    # a sentence a stage-1 model trained on never lands in dev/test (it moves to train)
    many = [ParallelPair(f"verse number {i} of the lord", f"versículo {i}", f"k{i}")
            for i in range(400)]
    held = [p.en for p in many if sentence_pool([p]).splits["train"] == []]
    assert held  # some hash into dev/test on their own
    seen = sentence_pool(many, seen_text=set(held))
    assert not seen.splits["dev"] and not seen.splits["test"]
    assert len(seen.splits["train"]) == 400 and seen.dropped["seen_held_out"] == len(held)
    m = tmp_path / "train.jsonl"
    m.write_text(json.dumps({"id": "a", "text": "The Lord is good.", "duration": 1.0}) + "\n"
                 + json.dumps({"id": "b", "text": "something else", "duration": 1.0}) + "\n")
    assert attach_translations(m, pairs[:1]) == (2, 1)
    rows = [json.loads(x) for x in m.read_text().splitlines()]
    assert rows[0]["translation"] == "el señor es bueno" and "translation" not in rows[1]
    if shutil.which("diatheke") and Path("/usr/share/sword/mods.d/spaRV1909eb.conf").exists():
        real = read_bible_pairs("Gen 1:3")
        assert [(p.en, p.es) for p in real] == [
            ("god said let there be light and there was light",
             "y dijo dios sea la luz y fué la luz")]
