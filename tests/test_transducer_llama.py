"""The Transducer-Llama recipe: the three training stages (factorized -> llama -> mwer) on a
tiny corpus, exact resume, MWER lowering the expected word errors, and the comparison table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from edgeasr.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_for_inference,
    save_checkpoint,
)
from edgeasr.train.cli import main as train_main
from edgeasr.train.llama.model import Llama, tiny_llama_config
from edgeasr.train.llama.train_lm import save_lm
from edgeasr.train.model import tiny_config
from edgeasr.train.model.factorized import FactorizedConfig, FactorizedTransducer
from edgeasr.train.nbest import MwerObjective, decode_nbest, word_errors
from edgeasr.train.transducer_llama import load_factorized

from edgeasr.tokenizer import Tokenizer

CONFIG = Path(__file__).resolve().parents[1] / "train" / "configs" / "tiny.toml"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "we", "call", "it", "bear", "one", "two"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8 short speech-like wavs with 2-4 word transcripts, a V=40 tokenizer and a tiny Llama
    on that vocabulary (the "adapted" LM of stage llama)."""
    root = tmp_path_factory.mktemp("tl")
    rng = np.random.default_rng(0)
    lines, texts = [], []
    for i in range(8):
        dur = 0.6 + 0.1 * i
        t = np.arange(int(dur * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (120 + 10 * i) * t) * (0.5 - 0.5 * np.cos(6 * np.pi * t))
        sf.write(root / f"u{i}.wav", (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
                 16000)
        texts.append(" ".join(rng.choice(WORDS, size=2 + i % 3)))
        lines.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": texts[-1], "duration": dur})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    tok = Tokenizer.train([*texts, *WORDS] * 3, root / "tok", vocab_size=40)
    torch.manual_seed(3)
    save_lm(root / "lm.pt", Llama(tiny_llama_config(vocab_size=40)), tok)
    return {"root": root, "train": root / "train.jsonl", "tokenizer": root / "tok.model",
            "lm": root / "lm.pt"}


def _sets(corpus: dict[str, Path], *extra: str) -> list[str]:
    out = [f"tokenizer={json.dumps(str(corpus['tokenizer']))}",
           f'data.train=[{{manifest={json.dumps(str(corpus["train"]))}}}]',
           f'data.valid=[{{manifest={json.dumps(str(corpus["train"]))}, name="dev"}}]',
           *extra]
    return [a for s in out for a in ("--set", s)]


def _stage(*args: str) -> None:
    assert train_main(["transducer-llama", *args]) == 0


@pytest.fixture(scope="module")
def stages(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run the recipe: factorized (3 steps, validated) -> llama (2) -> mwer (2)."""
    exp = tmp_path_factory.mktemp("stages")
    _stage(str(CONFIG), "--stage", "factorized", "--exp-dir", str(exp / "a"),
           *_sets(corpus, "loop.max_steps=3", "loop.valid_every_steps=3"))
    a = latest_checkpoint(exp / "a")
    _stage("--stage", "llama", "--init", str(a), "--lm", str(corpus["lm"]),
           "--exp-dir", str(exp / "b"), "--lm-weight", "0.5", "--set", "loop.max_steps=2")
    b = latest_checkpoint(exp / "b")
    _stage("--stage", "mwer", "--init", str(b), "--exp-dir", str(exp / "c"), "--beam", "3",
           "--set", "loop.max_steps=2")
    return {"a": a, "b": b, "c": latest_checkpoint(exp / "c"), "exp": exp}


def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in (path.parent / "log.jsonl").read_text().splitlines()]


def test_stages_chain_their_checkpoints(stages: dict[str, Path], corpus: dict[str, Path]) -> None:
    a, b, c = (load_checkpoint(stages[k]) for k in "abc")
    assert [s["factorized"]["lm"]["kind"] for s in (a, b, c)] == ["stateless", "llama", "llama"]
    assert not a["factorized"]["lm_frozen"] and b["factorized"]["lm_frozen"]
    assert b["factorized"]["config"]["lm_weight"] == 0.5 == c["factorized"]["config"]["lm_weight"]
    assert c["factorized"]["stage"]["stage"] == "mwer"
    # the ASR weights change in every stage, the frozen Llama never
    key = "encoder.out_proj.weight"
    assert not torch.equal(a["model"][key], b["model"][key])
    assert not torch.equal(b["model"][key], c["model"][key])
    llama = torch.load(corpus["lm"], weights_only=True)["model"]
    for s in (b, c):
        for k, v in llama.items():
            assert torch.equal(s["factorized"]["lm"]["state"][k], v), k
    # every stage validated or logged its own loss parts
    valid = [r for r in _log(stages["a"]) if r["kind"] == "valid"]
    assert valid and valid[0]["utts"] == 4 and len(valid[0]["examples"]) == 3
    mwer = [r for r in _log(stages["c"]) if r["kind"] == "train"]
    assert [r["step"] for r in mwer] == [1, 2]
    assert {"mwer", "expected_errors", "oracle_errors", "rnnt"} <= set(mwer[0]["parts"])
    # a factorized checkpoint is still a plain transducer checkpoint for export and backends
    plain, _, _ = load_for_inference(stages["c"])
    model, _, configs = load_factorized(stages["c"])
    assert isinstance(model, FactorizedTransducer) and model.lm_frozen
    torch.testing.assert_close(plain.state_dict()[key], model.state_dict()[key])


def test_stage_resume_is_exact(stages: dict[str, Path], corpus: dict[str, Path]) -> None:
    """3 steps straight (stage a of the fixture) == 2 steps, stop, --resume, 1 more."""
    exp = stages["exp"] / "a-split"
    common = [str(CONFIG), "--stage", "factorized", "--exp-dir", str(exp)]
    _stage(*common, *_sets(corpus, "loop.max_steps=2", "loop.valid_every_steps=3"))
    _stage(*common, "--resume", *_sets(corpus, "loop.max_steps=3", "loop.valid_every_steps=3"))
    a, b = load_checkpoint(stages["a"]), load_checkpoint(latest_checkpoint(exp))
    assert a["step"] == b["step"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["factorized"]["lm"]["state"].items():
        assert torch.equal(v, b["factorized"]["lm"]["state"][k]), k


def test_stage_errors_are_named(corpus: dict[str, Path], tmp_path: Path) -> None:
    assert train_main(["transducer-llama", "--stage", "llama", "--exp-dir", str(tmp_path),
                       "--init", "x.pt"]) == 2  # no --lm
    assert train_main(["transducer-llama", str(CONFIG), "--stage", "factorized", "--exp-dir",
                       str(tmp_path), "--lm", str(corpus["lm"])]) == 2
    # an LM on another vocabulary is refused before any training
    other = Tokenizer.train(WORDS * 3, tmp_path / "other", vocab_size=30)
    save_lm(tmp_path / "bad.pt", Llama(tiny_llama_config(vocab_size=30)), other)
    init = tmp_path / "init.pt"
    _stage(str(CONFIG), "--stage", "factorized", "--exp-dir", str(tmp_path / "a"),
           *_sets(corpus, "loop.max_steps=1"))
    init.write_bytes(latest_checkpoint(tmp_path / "a").read_bytes())
    assert train_main(["transducer-llama", "--stage", "llama", "--init", str(init), "--lm",
                       str(tmp_path / "bad.pt"), "--exp-dir", str(tmp_path / "b")]) == 2


def test_init_allows_new_training_settings_but_not_a_new_network(
        stages: dict[str, Path], corpus: dict[str, Path], tmp_path: Path) -> None:
    """A stage may change training-only settings of its --init model (here the predictor
    masking); a different network shape is refused before training."""
    _stage("--stage", "llama", "--init", str(stages["a"]), "--lm", str(corpus["lm"]),
           "--exp-dir", str(tmp_path / "ok"), "--set", "loop.max_steps=1",
           "--set", "model.mask_prob=0.1")
    assert "mask_prob" in (tmp_path / "ok" / "train.log").read_text()
    assert train_main(["transducer-llama", "--stage", "llama", "--init", str(stages["a"]),
                       "--lm", str(corpus["lm"]), "--exp-dir", str(tmp_path / "bad"),
                       "--set", "loop.max_steps=1", "--set", "model.num_layers=3"]) == 2
    assert latest_checkpoint(tmp_path / "bad") is None


def test_mwer_lowers_expected_word_errors_on_a_fixed_batch() -> None:
    """A few MWER steps on one toy batch (N-best regenerated each step, as in the stage)
    lower the expected number of word errors of the model's N-best list."""
    torch.manual_seed(0)
    model = FactorizedTransducer(tiny_config(vocab_size=16, mask_prob=0.0, dropout=0.0),
                                 FactorizedConfig(lm_weight=0.5))
    with torch.no_grad():
        model.joint.blank_head.bias.fill_(-1.0)  # emit tokens, so N-best lists differ
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 4 * 8 + 7, 80, generator=g)
    lens = torch.tensor([39, 35, 31])
    targets = torch.tensor([[3, 5, 7, 9], [2, 9, 4, 0], [6, 6, 0, 0]])
    target_lens = torch.tensor([4, 3, 2])
    objective = MwerObjective(model, lambda ids: [str(i) for i in ids], beam=4, rnnt_weight=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    curve = []
    for _ in range(20):
        model.eval()  # no dropout / SpecAugment: the batch is the only thing that varies
        out = objective(feats, lens, targets, target_lens)
        curve.append(float(out.parts["expected_errors"]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert curve[0] > 0
    assert float(out.parts["oracle_errors"]) <= curve[-1]  # the best of the list bounds it
    assert np.mean(curve[-3:]) < curve[0] - 0.3, curve


def _lattice_greedy(model: FactorizedTransducer, feats: torch.Tensor, lens: torch.Tensor
                    ) -> list[list[int]]:
    """One-symbol-per-frame greedy search written on the training-side lattice."""
    with torch.no_grad():
        e, e_lens = model.encoder(feats, lens, chunk_size=model.cfg.chunk_size)
        out = []
        for n in range(len(lens)):
            hist = [0]
            for t in range(int(e_lens[n])):
                p = model.predictor.step(torch.tensor([([0, 0] + hist[1:])[-2:]]))
                lm = model.lm_log_probs(torch.tensor([hist]))[:, -1:]
                logp, _ = model.lattice(e[n : n + 1, t : t + 1], p[:, None], lm)
                tok = int(logp[0, 0, 0].argmax())
                if tok:
                    hist.append(tok)
            out.append(hist[1:])
        return out


def test_decode_nbest_is_the_runtime_beam_search() -> None:
    """Beam 1 of decode_nbest is the greedy path of the model's own lattice (runtime search,
    torch backend and torch LM reproduce the training-side distribution); wider beams give
    distinct hypotheses, best first; the model's mode is restored."""
    torch.manual_seed(0)
    model = FactorizedTransducer(tiny_config(vocab_size=16), FactorizedConfig(lm_weight=0.7))
    with torch.no_grad():
        model.joint.blank_head.bias.fill_(-2.5)
        model.lm.out.weight.mul_(20.0)  # a peaked weak LM, so it takes part in the decisions
    model.train()
    feats = torch.randn(2, 39, 80, generator=torch.Generator().manual_seed(2))
    lens = torch.tensor([39, 27])
    nbest = decode_nbest(model, feats, lens, beam=3)
    assert model.training  # mode restored
    assert [len(n) <= 3 for n in nbest] == [True, True]
    for utt in nbest:
        scores = [s for _, s in utt]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(t) for t, _ in utt}) == len(utt)
    one = [u[0][0] for u in decode_nbest(model, feats, lens, beam=1)]
    model.eval()
    assert one == _lattice_greedy(model, feats, lens)
    assert all(len(h) >= 2 for h in one)
    model.fcfg.lm_weight = 0.0
    assert _lattice_greedy(model, feats, lens) != one
    assert word_errors(["a", "b", "c"], ["a", "x", "c", "d"]) == 2


def test_comparison_table_on_tiny_models(stages: dict[str, Path], corpus: dict[str, Path],
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    pytest.importorskip("gguf")
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as e:
        pytest.skip(f"llama-cpp-python unusable: {e}")
    from benchmarks.transducer_llama import main

    hat = tmp_path / "hat.pt"  # a plain checkpoint: the factorized one without its LM
    state = load_checkpoint(stages["a"])
    save_checkpoint(hat, {k: v for k, v in state.items() if k not in ("factorized", "format",
                                                                    "version")})
    out = tmp_path / "rows.json"
    assert main(["--test", f"dev={corpus['train']}", "--test", f"again={corpus['train']}",
                 "--limit", "3", "--hat", str(hat), "--factorized", str(stages["a"]),
                 "--llama", str(stages["b"]), "--mwer", str(stages["c"]), "--beam", "2",
                 "--gguf-type", "f32", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for label in ("HAT baseline", "Factorized transducer", "Transducer-Llama",
                  "Transducer-Llama + MWER"):
        assert f"| {label} |" in table
    rows = json.loads(out.read_text())
    assert [r["key"] for r in rows] == ["hat", "factorized", "llama", "mwer"]
    assert all(r["audio_s"] > 0 and r["rtf"] > 0 and r["words"]["dev"] > 0 for r in rows)
    assert rows[0]["lm_bytes"] == 0 and rows[2]["lm"].startswith("llama.cpp")
    assert rows[2]["lm_bytes"] > rows[1]["lm_bytes"] > 0  # GGUF Llama vs the weak LM
    assert rows[1]["wer"]["dev"] == rows[1]["wer"]["again"]
