"""Training recipe: config, sampler, dataset/collate, checkpoints, exact resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from edgeasr.train.checkpoint import (
    CheckpointError,
    average_checkpoints,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from edgeasr.train.config import (
    ConfigError,
    ManifestSpec,
    OptimConfig,
    load_config,
    read_config,
)
from edgeasr.train.data import AsrDataset, collate, global_cmvn, make_loader, sampler_for
from edgeasr.train.sampler import DynamicBucketSampler

from edgeasr.tokenizer import Tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
# The shared data folder sits beside the repository (../shared), as on CI.
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762-train"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "we", "call", "it", "bear", "zero", "one", "two",
         "three", "four", "five", "six", "seven"]


# ---------------------------------------------------------------------------- fixtures
def _durations(n: int = 300, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 12.0, n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny synthetic corpus: 12 speech-like wavs, a manifest, a tokenizer; plus one
    manifest line pointing at a corrupt file."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    texts = []
    for i in range(12):
        dur = 0.6 + 0.1 * i
        n = int(dur * 16000)
        t = np.arange(n) / 16000
        f0 = 120 + 10 * i
        x = 0.3 * np.sin(2 * np.pi * f0 * t) * (0.5 - 0.5 * np.cos(2 * np.pi * 3 * t))
        x += 0.01 * rng.standard_normal(n)
        sf.write(root / f"u{i}.wav", x.astype(np.float32), 16000)
        text = " ".join(rng.choice(WORDS, size=2 + i % 3))
        texts.append(text)
        lines.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "duration": dur})
    (root / "bad.wav").write_bytes(b"RIFF....not really a wav file at all")
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    bad = [*lines[:3], {"id": "bad", "audio": "bad.wav", "text": "the cat", "duration": 1.0}]
    (root / "with_bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    Tokenizer.train([*texts, *WORDS] * 3, root / "tok", vocab_size=40)
    return {"root": root, "train": root / "train.jsonl", "with_bad": root / "with_bad.jsonl",
            "tokenizer": root / "tok.model"}


# ---------------------------------------------------------------------------- config
def test_shipped_configs_load_and_validate() -> None:
    for name in ("default.toml", "default_anneal.toml", "default_stage3.toml",
                 "default_speed.toml", "default_pico.toml", "default_pico_speed.toml",
                 "hent_srt_stage1.toml", "tiny.toml"):
        cfg = load_config(CONFIGS / name)
        assert cfg.data.train and cfg.data.max_duration > 0
        assert cfg.to_dict()["optim"]["betas"] == list(cfg.optim.betas)


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "tiny.toml", ["loop.max_steps=7", "optim.lr=0.5",
                                              "tokenizer=other.model"])
    assert (cfg.loop.max_steps, cfg.optim.lr, cfg.tokenizer) == (7, 0.5, "other.model")
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(CONFIGS / "tiny.toml", ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="unknown config key.*loop.max_stpes"):
        load_config(CONFIGS / "tiny.toml", ["loop.max_stpes=3"])
    with pytest.raises(ConfigError, match="max_utt_duration"):
        load_config(CONFIGS / "tiny.toml", ["data.max_utt_duration=1000"])
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [unclosed")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_config_base_merges_tables_and_replaces_other_values(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "first.toml").write_text(
        'tokenizer = "tok.model"\nseed = 1\n'
        '[data]\ntrain = [{ manifest = "a.jsonl" }, { manifest = "b.jsonl" }]\n'
        '[optim]\nlr = 2e-3\nwarmup_steps = 250\n'
        '[model]\nd_model = 32\nmask_prob = 0.5\nspecaugment = { num_time_masks = 4 }\n')
    # a base named relative to the file that names it, not to the working directory
    (tmp_path / "stages" / "second.toml").write_text(
        'base = "../first.toml"\nseed = 2\n'
        '[data]\ntrain = [{ manifest = "c.jsonl" }]\n'
        '[optim]\nlr = 3e-4\n'
        '[model]\nspecaugment = { max_time_fraction = 0.1 }\n')
    (tmp_path / "stages" / "third.toml").write_text(
        'base = "second.toml"\n[model]\nmask_prob = 0.2\n')
    raw = read_config(tmp_path / "stages" / "third.toml", ["optim.warmup_steps=100"])
    assert "base" not in raw
    assert (raw["tokenizer"], raw["seed"]) == ("tok.model", 2)
    assert raw["data"]["train"] == [{"manifest": "c.jsonl"}]  # arrays replace, never append
    assert raw["optim"] == {"lr": 3e-4, "warmup_steps": 100}  # tables merge; overrides last
    assert raw["model"] == {"d_model": 32, "mask_prob": 0.2,
                            "specaugment": {"num_time_masks": 4, "max_time_fraction": 0.1}}
    # the shipped stages resolve to their own data and schedule over stage 1's network
    stage1 = read_config(CONFIGS / "default.toml")
    speed = read_config(CONFIGS / "default_speed.toml")
    assert speed["features"] == stage1["features"]
    training_only = ("mask_prob", "full_context_prob")
    assert {k: v for k, v in speed["model"].items() if k not in training_only} \
        == {k: v for k, v in stage1["model"].items() if k not in training_only}
    assert all(s["speeds"] == [0.9, 1.0, 1.1] for s in speed["data"]["train"])
    assert (speed["optim"]["total_steps"], speed["seed"]) == (2000, 44)


def test_config_base_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    cycle = r"name each other as base .*a\.toml -> .*b\.toml -> .*a\.toml"
    with pytest.raises(ConfigError, match=cycle):
        read_config(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('base = "missing.toml"\n')
    missing = r"missing\.toml: config file not found \(the base of .*c\.toml\)"
    with pytest.raises(ConfigError, match=missing):
        read_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text("base = 3\n")
    with pytest.raises(ConfigError, match="base must be the path of another config, got 3"):
        load_config(tmp_path / "d.toml")


def test_learning_rate_schedules() -> None:
    from edgeasr.train.fit import learning_rate

    noam = OptimConfig(lr=1.0, warmup_steps=100, schedule="noam")
    assert learning_rate(0, noam, 0) == pytest.approx(0.01)
    assert learning_rate(99, noam, 0) == pytest.approx(1.0)
    assert learning_rate(399, noam, 0) == pytest.approx(0.5)  # sqrt(100 / 400)
    cos = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(9, cos, 110) == pytest.approx(1.0)
    assert learning_rate(59, cos, 110) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert learning_rate(500, cos, 110) == pytest.approx(0.1)


# ---------------------------------------------------------------------------- sampler
def test_sampler_respects_budget_and_covers_epoch() -> None:
    d = _durations()
    s = DynamicBucketSampler(d, max_duration=40.0, num_buckets=5, seed=3)
    batches = list(s)
    for b in batches:
        assert len(b) * d[b].max() <= 40.0 + 1e-9
    assert sorted(i for b in batches for i in b) == list(range(len(d)))
    # Bucketing keeps padding low: within a batch the durations are close.
    spread = np.mean([d[b].max() - d[b].min() for b in batches if len(b) > 1])
    assert spread < 2.5


def test_sampler_is_deterministic_per_seed_and_epoch() -> None:
    d = _durations()
    a = DynamicBucketSampler(d, 40.0, seed=3)
    b = DynamicBucketSampler(d, 40.0, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    c = DynamicBucketSampler(d, 40.0, seed=4)
    assert list(c) != first


def test_sampler_repeats_weight_manifests() -> None:
    d = np.full(100, 2.0)
    repeats = np.r_[np.full(50, 3.0), np.full(50, 0.5)]
    s = DynamicBucketSampler(d, 20.0, num_buckets=1, repeats=repeats, seed=0)
    counts = np.bincount([i for b in s for i in b], minlength=100)
    assert (counts[:50] == 3).all()
    assert set(counts[50:].tolist()) <= {0, 1}
    assert 15 <= counts[50:].sum() <= 35


@pytest.mark.parametrize("world_size", [2, 3])
def test_sampler_ddp_shards_disjoint_covering_equal(world_size: int) -> None:
    d = _durations(301)
    shards = []
    for rank in range(world_size):
        s = DynamicBucketSampler(d, 30.0, seed=5, rank=rank, world_size=world_size)
        shards.append(list(s))
        assert len(shards[-1]) == len(s)
    assert len({len(sh) for sh in shards}) == 1  # equal step counts: DDP never hangs
    items = [i for sh in shards for b in sh for i in b]
    assert sorted(items) == list(range(len(d)))  # disjoint and covering
    for sh in shards:
        for b in sh:
            assert len(b) * d[b].max() <= 30.0 + 1e-9


def test_sampler_resumes_at_next_batch() -> None:
    d = _durations()
    s = DynamicBucketSampler(d, 40.0, seed=3)
    s.set_epoch(2)
    full = list(s)
    state = s.state_dict(batches_done=5)
    fresh = DynamicBucketSampler(d, 40.0, seed=3)
    fresh.load_state_dict(state)
    assert list(fresh) == full[5:]
    assert list(fresh) == full  # the skip applies to one iteration only
    with pytest.raises(ValueError, match="seed"):
        DynamicBucketSampler(d, 40.0, seed=9).load_state_dict(state)


# ---------------------------------------------------------------------------- data
def test_dataset_features_tokens_and_collate(corpus: dict[str, Path]) -> None:
    tok = Tokenizer(corpus["tokenizer"])
    ds = AsrDataset([ManifestSpec(str(corpus["train"]), repeat=2.0)], tok)
    assert len(ds) == 12 and ds.repeats == [2.0] * 12
    ex = ds[3]
    assert ex is not None and ex.features.shape == (90, 80)  # 0.9 s -> 90 frames
    assert tok.decode(ex.tokens) == ex.text
    batch = collate([ds[0], None, ds[3]])
    assert batch is not None
    assert batch.features.shape == (2, 90, 80)
    assert batch.feature_lens.tolist() == [60, 90]
    assert batch.target_lens.tolist() == [len(ds[0].tokens), len(ex.tokens)]
    assert (batch.features[0, 60:] == 0).all() and (batch.targets[0, len(ds[0].tokens):] == 0).all()
    assert collate([None]) is None


def test_dataset_drops_utterances_with_more_tokens_than_encoder_frames(
        corpus: dict[str, Path]) -> None:
    """The filter follows the model's frame rate: at 80 ms frames (12.5/s) an utterance needs
    twice the duration per token that it needs at 40 ms frames."""
    tok = Tokenizer(corpus["tokenizer"])
    spec = [ManifestSpec(str(corpus["train"]))]
    ds = AsrDataset(spec, tok)
    rates = [len(u.tokens) / u.duration for u in ds.utterances]
    cut = sorted(rates)[len(rates) // 2]
    slow = AsrDataset(spec, tok, frame_rate=cut)
    assert len(slow) == sum(r <= cut for r in rates) < len(ds)
    assert all(len(u.tokens) <= u.duration * cut for u in slow.utterances)


def test_dataset_excludes_the_sentences_of_held_out_sets(corpus: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """``exclude_text_of``: a training row whose transcript (normalized: case, spacing) is a
    sentence of a listed test set is dropped; every other row stays."""
    tok = Tokenizer(corpus["tokenizer"])
    full = AsrDataset([ManifestSpec(str(corpus["train"]))], tok)
    held = tmp_path / "test.jsonl"
    held.write_text(json.dumps({"id": "t", "audio": "t.wav", "duration": 1.0,
                                "text": "  " + full.utterances[0].text.upper()}) + "\n")
    kept = AsrDataset([ManifestSpec(str(corpus["train"]), exclude_text_of=[str(held)])], tok)
    gone = {u.id for u in full.utterances} - {u.id for u in kept.utterances}
    same_text = {u.id for u in full.utterances if u.text == full.utterances[0].text}
    assert gone == same_text and len(kept) == len(full) - len(same_text) > 0


def test_speed_perturbation_adds_one_copy_per_factor(corpus: dict[str, Path]) -> None:
    """``speeds``: one copy of each utterance per factor; a copy at speed f is 1/f as long and
    its pitch f times as high (the test wavs are sines), and its example id says so."""
    tok = Tokenizer(corpus["tokenizer"])
    plain = AsrDataset([ManifestSpec(str(corpus["train"]))], tok)
    ds = AsrDataset([ManifestSpec(str(corpus["train"]), speeds=[0.9, 1.0, 1.1])], tok)
    assert len(ds) == 3 * len(plain)
    assert ds.total_hours == pytest.approx(plain.total_hours * (1 / 0.9 + 1 + 1 / 1.1))
    by_speed = {u.speed: i for i, u in enumerate(ds.utterances) if u.id == "u5"}
    assert sorted(by_speed) == [0.9, 1.0, 1.1]

    def pitch(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        return float(np.argmax(spec) * 16000 / len(x))

    x1, x11 = ds.load_samples(by_speed[1.0]), ds.load_samples(by_speed[1.1])
    assert len(x11) == pytest.approx(len(x1) / 1.1, abs=2)
    assert pitch(x11) / pitch(x1) == pytest.approx(1.1, rel=0.02)
    assert ds[by_speed[1.1]].id == "u5_sp1.1" and ds[by_speed[1.0]].id == "u5"
    assert len(ds[by_speed[0.9]].features) > len(ds[by_speed[1.0]].features)
    # max_utts counts manifest rows, each with all its copies (not copies, cut mid-row)
    few = AsrDataset([ManifestSpec(str(corpus["train"]), speeds=[0.9, 1.0, 1.1])], tok, max_utts=2)
    assert [(u.id, u.speed) for u in few.utterances] == [
        (u.id, u.speed) for u in ds.utterances[:6]]
    assert len({u.id for u in few.utterances}) == 2
    for bad in ([], [0.9, 0.9], [3.0]):
        with pytest.raises(ConfigError, match="speeds"):
            load_config(CONFIGS / "tiny.toml", [
                f"tokenizer={json.dumps(str(corpus['tokenizer']))}",
                f'data.train=[{{manifest={json.dumps(str(corpus["train"]))}, speeds={bad}}}]'])


def test_bad_audio_is_logged_once_and_skipped(
    corpus: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    tok = Tokenizer(corpus["tokenizer"])
    ds = AsrDataset([ManifestSpec(str(corpus["with_bad"]))], tok)
    sampler = sampler_for(ds, max_duration=100.0, num_buckets=1, seed=0)
    with caplog.at_level(logging.WARNING, logger="edgeasr.train.data"):
        for _ in range(2):
            batches = [b for b in make_loader(ds, sampler, num_workers=0)]
            assert sorted(i for b in batches for i in b.ids) == ["u0", "u1", "u2"]
    warnings = [r for r in caplog.records
                if r.levelno >= logging.WARNING and "bad" in r.getMessage()]
    assert len(warnings) == 1 and "bad.wav" in warnings[0].getMessage()


def test_loader_with_worker_process_skips_bad_audio(corpus: dict[str, Path]) -> None:
    """Features are computed in a DataLoader worker; the bad file still only drops itself."""
    tok = Tokenizer(corpus["tokenizer"])
    ds = AsrDataset([ManifestSpec(str(corpus["with_bad"]))], tok)
    sampler = sampler_for(ds, max_duration=100.0, num_buckets=1, seed=0)
    loader = make_loader(ds, sampler, num_workers=1)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(loader)
        assert sorted(i for b in batches for i in b.ids) == ["u0", "u1", "u2"]
        assert all(b.features.shape[2] == 80 for b in batches)


def test_global_cmvn_matches_numpy(corpus: dict[str, Path]) -> None:
    tok = Tokenizer(corpus["tokenizer"])
    ds = AsrDataset([ManifestSpec(str(corpus["train"]))], tok)
    mean, std = global_cmvn(ds, num_utts=100)
    allf = np.concatenate([ds[i].features for i in range(len(ds))]).astype(np.float64)
    np.testing.assert_allclose(mean, allf.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(std, allf.std(0), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- checkpoints
def _fake_state(value: float, step: int) -> dict:
    return {
        "model_config": {"d": 1},
        "model": {"w": torch.full((2, 3), value), "n": torch.tensor(step)},
        "tokenizer": b"model-bytes",
        "train_config": {"seed": 0},
        "feature_config": {},
        "step": step,
        "rng": get_rng_state(),
    }


def test_checkpoint_roundtrip_weights_only_and_rotation(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path / f"step-{step}.pt", _fake_state(step, step))
    state = torch.load(tmp_path / "step-40.pt", weights_only=True)  # plain data only
    assert state["tokenizer"] == b"model-bytes" and state["step"] == 40
    assert latest_checkpoint(tmp_path).name == "step-40.pt"
    rotate_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-30.pt", "step-40.pt"]
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_average_is_mean_of_parameters(tmp_path: Path) -> None:
    paths = []
    for k, v in enumerate((1.0, 2.0, 6.0)):
        paths.append(save_checkpoint(tmp_path / f"epoch-{k}.pt", _fake_state(v, k)))
    avg = average_checkpoints(paths)
    assert torch.equal(avg["model"]["w"], torch.full((2, 3), 3.0))
    assert avg["model"]["n"].item() == 2  # integer buffers: from the last checkpoint
    assert "optimizer" not in avg and avg["tokenizer"] == b"model-bytes"
    # weighted (normalized): 0.5*1 + 0.25*2 + 0.25*6 = 2.5
    soup = average_checkpoints(paths, [2, 1, 1])
    assert torch.allclose(soup["model"]["w"], torch.full((2, 3), 2.5))
    assert soup["average_weights"] == [0.5, 0.25, 0.25]
    assert torch.equal(average_checkpoints(paths, [0, 0, 1])["model"]["w"],
                       torch.full((2, 3), 6.0))
    for bad, match in [([1, 1], "2 weights for 3"), ([1, -1, 1], ">= 0"), ([0, 0, 0], "positive")]:
        with pytest.raises(CheckpointError, match=match):
            average_checkpoints(paths, bad)


def test_rng_state_roundtrip() -> None:
    import random

    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# ---------------------------------------------------------------------------- training loop
def tiny_config(corpus: dict[str, Path], *overrides: str):
    """The shipped tiny config pointed at the synthetic test corpus."""
    return load_config(CONFIGS / "tiny.toml", [
        f"tokenizer={json.dumps(str(corpus['tokenizer']))}",
        f'data.train=[{{manifest={json.dumps(str(corpus["train"]))}}}]',
        f'data.valid=[{{manifest={json.dumps(str(corpus["train"]))}, name="dev"}}]',
        *overrides,
    ])


def _params(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_continues_bit_exact(corpus: dict[str, Path], tmp_path: Path) -> None:
    """6 steps straight == 3 steps, stop, resume, 3 more (dropout, SpecAugment, chunk sampling
    and null-predictor masking all draw random numbers, and validation runs in between)."""
    from edgeasr.train.fit import fit

    fit(tiny_config(corpus, "loop.max_steps=6"), tmp_path / "straight")
    fit(tiny_config(corpus, "loop.max_steps=3"), tmp_path / "split")
    first_half = _params(tmp_path / "split" / "step-3.pt")
    with (tmp_path / "split" / "log.jsonl").open("a") as f:  # as if killed after logging
        f.write(json.dumps({"kind": "train", "step": 4, "loss": 1.0}) + "\n" + '{"kind": "tr')
    fit(tiny_config(corpus, "loop.max_steps=6"), tmp_path / "split", resume=True)
    a = _params(tmp_path / "straight" / "step-6.pt")
    b = _params(tmp_path / "split" / "step-6.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(first_half["encoder.out_proj.weight"], b["encoder.out_proj.weight"])
    # The log covers both halves once: steps 1..6, and the CMVN buffer was set.
    log = [json.loads(x) for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert not torch.equal(a["encoder.cmvn.mean"], torch.zeros_like(a["encoder.cmvn.mean"]))
    assert (tmp_path / "split" / "curves.png").stat().st_size > 1000


def test_new_run_refuses_an_earlier_runs_dir_and_drops_a_stale_log(corpus: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    """Without --resume, a folder with checkpoints is refused (starting over would rotate them
    away); a log left by a run killed before its first checkpoint is started anew, not appended."""
    from edgeasr.train.fit import fit

    exp = tmp_path / "run"
    exp.mkdir()
    (exp / "log.jsonl").write_text(json.dumps({"kind": "train", "step": 7, "loss": 9.0}) + "\n")
    fit(tiny_config(corpus, "loop.max_steps=2"), exp)
    log = [json.loads(x) for x in (exp / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2]
    with pytest.raises(ConfigError, match="--resume"):
        fit(tiny_config(corpus, "loop.max_steps=4"), exp)
    assert load_checkpoint(exp / "step-2.pt")["step"] == 2


def test_resume_from_epoch_end_starts_the_next_epoch(corpus: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """Resuming from ``epoch-1.pt`` continues with epoch 2 (it used to replay epoch 1): two
    epochs straight == one epoch, stop, resume to two."""
    from edgeasr.train.fit import fit

    fit(tiny_config(corpus, "loop.max_epochs=2", "loop.max_steps=0"), tmp_path / "straight")
    fit(tiny_config(corpus, "loop.max_epochs=1", "loop.max_steps=0"), tmp_path / "split")
    fit(tiny_config(corpus, "loop.max_epochs=2", "loop.max_steps=0"), tmp_path / "split",
        resume=True)
    a = load_checkpoint(tmp_path / "straight" / "epoch-2.pt")
    b = load_checkpoint(tmp_path / "split" / "epoch-2.pt")
    assert a["step"] == b["step"] > load_checkpoint(tmp_path / "split" / "epoch-1.pt")["step"]
    assert b["sampler"]["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_init_checkpoint_starts_a_new_run_with_its_weights_and_tokenizer(
        corpus: dict[str, Path], tmp_path: Path) -> None:
    """``Trainer(init=...)`` (the hook the st and transducer-llama recipes start from): the
    weights, CMVN and tokenizer are the checkpoint's, the seed's own initialization is not
    used, and a checkpoint of another model shape is refused before training."""
    from edgeasr.train.fit import Trainer

    source = Trainer(tiny_config(corpus, "seed=1", "data.valid=[]"), tmp_path / "a")
    save_checkpoint(tmp_path / "init.pt", source.state_dict())
    run = Trainer(tiny_config(corpus, "seed=2", "data.valid=[]",
                              "tokenizer='missing.model'"),
                  tmp_path / "b", init=str(tmp_path / "init.pt"))
    for k, v in source.model.state_dict().items():
        assert torch.equal(v, run.model.state_dict()[k]), k
    assert (tmp_path / "b" / "tokenizer.model").read_bytes() == corpus["tokenizer"].read_bytes()
    with pytest.raises(ConfigError, match="network differs.*d_model"):
        Trainer(tiny_config(corpus, "data.valid=[]", "model.d_model=16"), tmp_path / "c",
                init=str(tmp_path / "init.pt"))
    # Training-only settings may change on a warm start (lighter masking, other chunk sizes).
    lighter = Trainer(tiny_config(corpus, "data.valid=[]", "model.mask_prob=0.1",
                                  "model.full_context_prob=0.2"),
                      tmp_path / "d", init=str(tmp_path / "init.pt"))
    for k, v in source.model.state_dict().items():
        assert torch.equal(v, lighter.model.state_dict()[k]), k
    assert lighter.model.cfg.mask_prob == 0.1


def test_load_for_inference_and_average_command(corpus: dict[str, Path], tmp_path: Path) -> None:
    from edgeasr.train.average_cmd import newest_checkpoints
    from edgeasr.train.checkpoint import load_for_inference
    from edgeasr.train.cli import main as cli_main
    from edgeasr.train.fit import fit

    exp = tmp_path / "exp"
    fit(tiny_config(corpus, "loop.max_steps=8", "data.valid=[]"), exp)
    epochs = newest_checkpoints(exp, 2)
    assert [p.name for p in epochs] == ["epoch-1.pt", "epoch-2.pt"]
    out = tmp_path / "avg.pt"
    assert cli_main(["average", "--exp-dir", str(exp), "--last", "2", "--out", str(out)]) == 0
    model, tok_bytes, configs = load_for_inference(out)
    assert tok_bytes == corpus["tokenizer"].read_bytes()
    assert configs["model_config"]["d_model"] == 32
    assert configs["feature_config"]["num_mel_bins"] == 80
    a, b = _params(epochs[0]), _params(epochs[1])
    for k, v in model.state_dict().items():
        if torch.is_floating_point(v):
            torch.testing.assert_close(v, (a[k] + b[k]) / 2, rtol=0, atol=1e-7)
    assert not model.training
    soup = tmp_path / "soup.pt"
    assert cli_main(["average", *map(str, epochs), "--weights", "1", "3", "--out", str(soup)]) == 0
    model, _, _ = load_for_inference(soup)
    for k, v in model.state_dict().items():
        if torch.is_floating_point(v):
            torch.testing.assert_close(v, 0.25 * a[k] + 0.75 * b[k], rtol=0, atol=1e-6)
    with pytest.raises(SystemExit, match="1 weights for 2 checkpoints"):
        cli_main(["average", *map(str, epochs), "--weights", "1", "--out", str(soup)])


def test_tokenizer_command(tmp_path: Path, corpus: dict[str, Path]) -> None:
    from edgeasr.train.cli import main as cli_main

    extra = tmp_path / "more.txt"
    extra.write_text("Dr. Smith has 3 cats\n\n")
    out = tmp_path / "tok"
    assert cli_main(["tokenizer", "--text", str(corpus["train"]), str(extra),
                     "--vocab-size", "48", "--out", str(out)]) == 0
    tok = Tokenizer(out / "tokenizer.model")
    assert tok.vocab_size == 48
    assert tok.decode(tok.encode("doctor smith has three cats")) == "doctor smith has three cats"
    assert (out / "tokens.txt").read_text().splitlines()[0] == "<blk> 0"


def test_holdout_speakers_is_seeded_and_disjoint() -> None:
    from edgeasr.train.holdout_cmd import holdout_speakers

    from edgeasr.manifest import Cut

    cuts = [Cut(f"{s}-{i}", Path(f"/a/{s}-{i}.wav"), "hi", 1.0, speaker=f"s{s}")
            for s in range(12) for i in range(3)]
    train, dev, held = holdout_speakers(cuts, 4, seed=0)
    assert len(held) == 4 and len(dev) == 12 and len(train) == 24
    assert {c.speaker for c in dev} == set(held)
    assert not {c.speaker for c in train} & set(held)
    assert holdout_speakers(cuts, 4, seed=0)[2] == held
    with pytest.raises(ValueError, match="cannot hold out 12 of 12"):
        holdout_speakers(cuts, 12)
