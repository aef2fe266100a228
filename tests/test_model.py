"""Tests of the model definition: frame arithmetic, chunked == full encoder, predictor, HAT joint,
predictor masking, losses wiring, SpecAugment and a tiny overfit with greedy decoding."""

from __future__ import annotations

import json
import random

import pytest
import torch
from edgeasr.train.model import (
    PAD_LENGTH,
    Conv2dSubsampling,
    EncoderCaches,
    ModelConfig,
    SpecAugment,
    SpecAugmentConfig,
    StreamingEncoder,
    Transducer,
    chunk_attention_mask,
    count_parameters,
    default_config,
    greedy_decode,
    hat_log_probs,
    sample_chunk_size,
    tiny_config,
)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Deterministic draws; one intra-op thread: these tensors are tiny, and on a shared
    2-core machine multi-threaded kernels on tiny tensors are ~100x slower, not faster."""
    torch.manual_seed(0)
    random.seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stream(model: Transducer, feats: torch.Tensor, chunk: int) -> torch.Tensor:
    """Run ``feats [N, T, F]`` through forward_chunk chunk by chunk (zero-padded tail)."""
    cfg = model.cfg
    n, t, f = feats.shape
    step = cfg.subsampling * chunk
    num_chunks = max(1, -(-(t - PAD_LENGTH) // step))
    padded = torch.zeros(n, num_chunks * step + PAD_LENGTH, f)
    padded[:, :t] = feats
    caches = EncoderCaches.init(n, cfg)
    outs = []
    for k in range(num_chunks):
        out, caches = model.encoder.forward_chunk(padded[:, k * step : k * step + step + 7], caches)
        outs.append(out)
    assert caches.processed_frames.tolist() == [num_chunks * chunk] * n
    return torch.cat(outs, dim=1)


# ----------------------------------------------------------------------------- config
def test_config_roundtrip_through_json() -> None:
    cfg = tiny_config(durations=(0, 1, 2), loss="full")
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.durations == (0, 1, 2) and isinstance(back.specaugment, SpecAugmentConfig)
    assert default_config().to_dict()["durations"] == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=30, num_heads=4), "divisible"),
        (dict(subsampling=6), "subsampling"),
        (dict(durations=(0, 2, 1)), "durations"),
        (dict(durations=(0,)), "durations"),
        (dict(loss="pruned", durations=(0, 1)), "pruned"),
        (dict(loss="ctc"), "loss"),
        (dict(mask_prob=1.5), "mask_prob"),
    ],
)
def test_config_validate_names_the_problem(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_config_from_dict_rejects_unknown_keys() -> None:
    d = tiny_config().to_dict()
    d["num_layer"] = 3
    with pytest.raises(ValueError, match="num_layer"):
        ModelConfig.from_dict(d)


def test_default_config_size() -> None:
    model = Transducer(default_config())
    n = count_parameters(model)
    assert 7_000_000 < n <= 10_000_000
    assert default_config().chunk_input_frames() == 4 * 8 + 7


# ----------------------------------------------------------------------------- front end
@pytest.mark.parametrize("factor", [4, 8])
def test_subsampling_chunk_arithmetic(factor: int) -> None:
    sub = Conv2dSubsampling(80, 4, 16, factor)
    for c in (1, 2, 3, 8):
        x = torch.randn(2, factor * c + PAD_LENGTH, 80)
        assert sub(x).shape == (2, c, 16)
    for t in range(11 + 4, 80):
        out = sub(torch.randn(1, t, 80)).shape[1]
        assert out == int(Conv2dSubsampling.output_lengths(torch.tensor([t]), factor))


def test_subsampling_rejects_bad_shapes() -> None:
    sub = Conv2dSubsampling(80, 4, 16)
    with pytest.raises(ValueError, match="80"):
        sub(torch.randn(1, 40, 40))
    with pytest.raises(ValueError, match="at least"):
        sub(torch.randn(1, 9, 80))


def test_cmvn_normalizes_inside_the_encoder() -> None:
    model = Transducer(tiny_config()).eval()
    assert model.encoder.cmvn.is_identity
    mean, std = torch.linspace(-3, 3, 80), torch.linspace(0.5, 2, 80)
    x = torch.randn(1, 30, 80)
    model.encoder.cmvn.set_stats(mean, std)
    torch.testing.assert_close(model.encoder.cmvn(x * std + mean), x, atol=1e-5, rtol=1e-5)
    assert "encoder.cmvn.mean" in model.state_dict()
    with pytest.raises(ValueError, match="shape"):
        model.encoder.cmvn.set_stats(torch.zeros(40), torch.ones(40))


# ----------------------------------------------------------------------------- encoder
def test_chunk_attention_mask_values() -> None:
    m = chunk_attention_mask(6, 2, 1)
    expected = torch.tensor([
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(m, expected)
    assert bool(chunk_attention_mask(5, None, 3).all())
    assert bool(chunk_attention_mask(5, -1, 0).all())


@pytest.mark.parametrize("subsampling", [4, 8])
@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 8])
def test_streaming_equals_masked_full_forward(subsampling: int, chunk: int) -> None:
    cfg = tiny_config(subsampling=subsampling, left_context=6)
    model = Transducer(cfg).eval()
    s = subsampling
    # three utterances of different lengths (one not a multiple of the chunk, one with a tail)
    lens = torch.tensor([s * 13 + 7, s * 9 + 7 + 3, s * 5 + 7 + 1])
    feats = torch.randn(3, int(lens.max()), 80)
    with torch.no_grad():
        full, frame_lens = model.encoder(feats, lens, chunk_size=chunk)
        streamed = _stream(model, feats, chunk)
    assert frame_lens.tolist() == [13, 9, 5]
    compared = 0
    for n in range(3):
        # frames of complete chunks (the last partial chunk sees padding frames when streamed,
        # exactly like a streaming runtime's tail padding; the masked forward does not)
        k = int(frame_lens[n]) // chunk * chunk
        diff = (streamed[n, :k] - full[n, :k]).abs().max() if k else torch.tensor(0.0)
        assert float(diff) <= 1e-4
        compared += k
    assert compared >= 13 // chunk * chunk


def test_streaming_equals_full_when_tail_fills_chunk() -> None:
    cfg = tiny_config(left_context=5)
    model = Transducer(cfg).eval()
    feats = torch.randn(2, 4 * 12 + 7, 80)
    lens = torch.tensor([4 * 12 + 7, 4 * 12 + 7])
    with torch.no_grad():
        for chunk in (3, 4, 6, 12):
            full, _ = model.encoder(feats, lens, chunk_size=chunk)
            torch.testing.assert_close(_stream(model, feats, chunk), full, atol=1e-4, rtol=0)


def test_streams_at_different_positions_batch_correctly() -> None:
    """Per-stream processed_frames masks the unfilled attention cache of younger streams."""
    cfg = tiny_config(left_context=6)
    model = Transducer(cfg).eval()
    chunk, step = 2, 8
    old, young = torch.randn(1, 5 * step + 7, 80), torch.randn(1, 2 * step + 7, 80)
    with torch.no_grad():
        c_old, c_young = EncoderCaches.init(1, cfg), EncoderCaches.init(1, cfg)
        for k in range(4):
            _, c_old = model.encoder.forward_chunk(old[:, k * step : k * step + 15], c_old)
        _, c_young = model.encoder.forward_chunk(young[:, :15], c_young)
        a, _ = model.encoder.forward_chunk(old[:, 4 * step : 4 * step + 15], c_old)
        b, _ = model.encoder.forward_chunk(young[:, step : step + 15], c_young)
        batched = EncoderCaches.stack([c_old, c_young])
        both, new = model.encoder.forward_chunk(
            torch.cat([old[:, 4 * step : 4 * step + 15], young[:, step : step + 15]]), batched
        )
    assert batched.processed_frames.tolist() == [4 * chunk, chunk]
    assert new.processed_frames.tolist() == [5 * chunk, 2 * chunk]
    torch.testing.assert_close(both, torch.cat([a, b]), atol=1e-5, rtol=0)


def test_full_forward_is_independent_of_batch_padding() -> None:
    model = Transducer(tiny_config()).eval()
    a, b = torch.randn(1, 47, 80), torch.randn(1, 71, 80)
    batch = torch.zeros(2, 71, 80)
    batch[0, :47], batch[1] = a[0], b[0]
    with torch.no_grad():
        for chunk in (None, 2):
            out, lens = model.encoder(batch, torch.tensor([47, 71]), chunk_size=chunk)
            alone, _ = model.encoder(a, torch.tensor([47]), chunk_size=chunk)
            torch.testing.assert_close(out[0, : int(lens[0])], alone[0], atol=1e-5, rtol=0)


def test_forward_chunk_rejects_bad_shapes() -> None:
    cfg = tiny_config()
    model = Transducer(cfg).eval()
    caches = EncoderCaches.init(2, cfg)
    with pytest.raises(ValueError, match="chunk features"):
        model.encoder.forward_chunk(torch.randn(2, 4 * 4 + 6, 80), caches)
    with pytest.raises(ValueError, match="caches"):
        model.encoder.forward_chunk(torch.randn(1, 4 * 4 + 7, 80), caches)


def test_caches_tuple_order_and_init() -> None:
    cfg = tiny_config()
    caches = EncoderCaches.init(3, cfg)
    attn, conv, processed = caches.to_tuple()
    assert attn.shape == (cfg.num_layers, cfg.left_context, 3, cfg.d_model)
    assert conv.shape == (cfg.num_layers, cfg.conv_kernel - 1, 3, cfg.d_model)
    assert processed.dtype == torch.int64 and processed.shape == (3,)
    back = EncoderCaches.from_tuple((attn, conv, processed))
    assert back.attn is attn and back.select(1).attn.shape[2] == 1


def test_sample_chunk_size_distribution() -> None:
    rng = random.Random(1)
    draws = [sample_chunk_size((8, 16, 32), 0.5, rng) for _ in range(4000)]
    assert set(draws) == {-1, 8, 16, 32}
    assert abs(draws.count(-1) / 4000 - 0.5) < 0.04
    assert abs(draws.count(16) / 4000 - 1 / 6) < 0.03


@pytest.mark.slow
def test_streaming_encoder_torch_exports_with_dynamic_batch() -> None:
    cfg = tiny_config()
    model = Transducer(cfg).eval()
    wrapper = StreamingEncoder(model.encoder).eval()
    args = (torch.randn(2, cfg.chunk_input_frames(), 80), *EncoderCaches.init(2, cfg).to_tuple())
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(wrapper, args, strict=False,
                             dynamic_shapes=({0: batch}, {2: batch}, {2: batch}, {0: batch}))
    # a different batch size, caches from a real previous step (processed_frames > 0)
    feats3 = torch.randn(3, cfg.chunk_input_frames(), 80)
    with torch.no_grad():
        _, state = model.encoder.forward_chunk(torch.randn_like(feats3),
                                               EncoderCaches.init(3, cfg))
        got = ep.module()(feats3, *state.to_tuple())
        want = wrapper(feats3, *state.to_tuple())
    assert len(got) == 4
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert got[3].tolist() == [2 * cfg.chunk_size] * 3


# ----------------------------------------------------------------------------- predictor, joint
def test_predictor_step_equals_forward() -> None:
    model = Transducer(tiny_config()).eval()
    tokens = torch.tensor([[0, 3, 5, 7, 2], [0, 9, 9, 1, 4]])  # blank-prefixed
    with torch.no_grad():
        full = model.predictor(tokens)  # [2, 5, J]
        for u in range(tokens.shape[1]):
            ctx = torch.stack([tokens[:, u - 1] if u >= 1 else torch.zeros(2, dtype=torch.long),
                               tokens[:, u]], dim=1)
            torch.testing.assert_close(model.predictor.step(ctx), full[:, u], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="context"):
        model.predictor.step(torch.zeros(2, 3, dtype=torch.long))


def test_joint_log_probs_normalize_and_match_hat_formula() -> None:
    model = Transducer(tiny_config(durations=(0, 1, 2, 3))).eval()
    e, p = torch.randn(2, 5, 1, 32), torch.randn(2, 1, 4, 32)
    out = model.joint(e, p)
    lp = out.token_log_probs()
    assert lp.shape == (2, 5, 4, 16) and out.blank_logit.shape == (2, 5, 4)
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(2, 5, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.duration_log_probs().logsumexp(-1), torch.zeros(2, 5, 4),
                               atol=1e-5, rtol=0)
    # blank prob is sigmoid(b); label probs are (1 - sigmoid(b)) * softmax(labels)
    b = out.blank_logit
    torch.testing.assert_close(lp[..., 0].exp(), torch.sigmoid(b))
    torch.testing.assert_close(lp[..., 1:].exp(),
                               (1 - torch.sigmoid(b))[..., None] * out.label_logits.softmax(-1))
    assert torch.allclose(hat_log_probs(torch.tensor([0.0]), torch.zeros(1, 3)).exp(),
                          torch.tensor([[0.5, 1 / 6, 1 / 6, 1 / 6]]))


def test_null_predictor_is_joint_with_zero_p() -> None:
    model = Transducer(tiny_config(durations=(0, 1, 2))).eval()
    e = torch.randn(3, 7, 32)
    null, zero = model.joint(e, None), model.joint(e, torch.zeros(3, 7, 32))
    assert torch.equal(null.blank_logit, zero.blank_logit)
    assert torch.equal(null.label_logits, zero.label_logits)
    assert torch.equal(null.duration_logits, zero.duration_logits)
    with pytest.raises(ValueError, match="J=32"):
        model.joint(torch.randn(2, 16))


def test_predictor_masking_rate() -> None:
    model = Transducer(tiny_config(mask_prob=0.5)).train()
    keep = model.predictor_keep_mask(20000, torch.device("cpu"))
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    assert abs(float(keep.mean()) - 0.5) < 0.02
    assert float(Transducer(tiny_config(mask_prob=0.2)).train()
                 .predictor_keep_mask(20000, torch.device("cpu")).mean()) == pytest.approx(0.8,
                                                                                          abs=0.02)
    assert bool(model.eval().predictor_keep_mask(100, torch.device("cpu")).all())


def test_masked_utterances_see_the_null_predictor() -> None:
    """With mask_prob=1 the transducer loss must not depend on the predictor at all."""
    cfg = tiny_config(mask_prob=1.0, iam_ctc_weight=0.0, specaugment=SpecAugmentConfig(
        num_freq_masks=0, num_time_masks=0))
    model = Transducer(cfg).train()
    feats, lens, targets, tlens = _batch()
    out = model(feats, lens, targets, tlens, chunk_size=-1)
    out.loss.backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0
               for p in model.predictor.parameters())
    assert float(model.encoder.out_proj.weight.grad.abs().max()) > 0


# ----------------------------------------------------------------------------- losses
def _batch(n_frames: tuple[int, ...] = (12, 9, 10), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([4 * t + 7 for t in n_frames])
    feats = torch.randn(len(n_frames), int(lens.max()), 80, generator=g)
    targets = torch.tensor([[3, 5, 7, 2], [9, 4, 0, 0], [1, 6, 6, 0]])
    tlens = torch.tensor([4, 2, 3])
    return feats, lens, targets, tlens


@pytest.mark.parametrize(
    "overrides, parts",
    [
        (dict(), {"transducer", "iam_ctc"}),
        (dict(durations=(0, 1, 2, 3)), {"transducer", "iam_ctc"}),
        (dict(loss="pruned", prune_range=3), {"transducer", "iam_ctc", "simple", "pruned"}),
    ],
)
def test_loss_is_finite_and_decreases(overrides: dict, parts: set[str]) -> None:
    model = Transducer(tiny_config(**overrides)).train()
    feats, lens, targets, tlens = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model(feats, lens, targets, tlens, chunk_size=-1)
        assert set(out.parts) == parts
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    model.eval()
    with torch.no_grad():
        final = float(model(feats, lens, targets, tlens).loss)
    assert final < losses[0] * 0.9


def test_dynamic_chunk_training_runs_every_chunk_size() -> None:
    model = Transducer(tiny_config()).train()
    feats, lens, targets, tlens = _batch()
    for chunk in (None, 2, 4, -1):
        assert torch.isfinite(model(feats, lens, targets, tlens, chunk_size=chunk).loss)


def test_iam_ctc_skips_utterances_too_short_for_ctc() -> None:
    model = Transducer(tiny_config(mask_prob=0.0)).eval()
    feats = torch.randn(2, 4 * 3 + 7, 80)
    lens = torch.tensor([4 * 3 + 7, 4 * 3 + 7])  # 3 frames each
    targets = torch.tensor([[3, 3, 3], [4, 5, 0]])  # first needs 5 frames for CTC
    out = model(feats, lens, targets, torch.tensor([3, 2]))
    assert torch.isfinite(out.parts["iam_ctc"]) and float(out.parts["iam_ctc"]) > 0


def test_loss_rejects_mismatched_targets() -> None:
    model = Transducer(tiny_config())
    feats, lens, targets, tlens = _batch()
    with pytest.raises(ValueError, match="targets"):
        model(feats, lens, targets[:2], tlens)


# ----------------------------------------------------------------------------- SpecAugment
def test_specaugment_masks_only_valid_frames_and_is_off_in_eval() -> None:
    aug = SpecAugment(SpecAugmentConfig(num_freq_masks=2, max_freq_width=10, num_time_masks=3,
                                        max_time_width=20, max_time_fraction=0.3, time_warp=5))
    feats = torch.randn(2, 200, 80) + 5.0
    lens = torch.tensor([200, 120])
    out = aug.train()(feats, lens, generator=torch.Generator().manual_seed(0))
    assert out.shape == feats.shape and not torch.equal(out, feats)
    assert torch.equal(out[1, 120:], feats[1, 120:])  # padding untouched
    changed_rows = (out[0] != feats[0]).any(dim=1)
    assert 0 < int(changed_rows.sum()) <= 200
    assert torch.equal(aug.eval()(feats, lens), feats)


# ----------------------------------------------------------------------------- overfit + decode
@pytest.mark.slow
def test_tiny_model_overfits_and_greedy_decodes_targets() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=12, d_model=48, ffn_dim=96, joint_dim=48, predictor_dim=32,
                      mask_prob=0.5, specaugment=SpecAugmentConfig(num_freq_masks=0,
                                                                   num_time_masks=0))
    model = Transducer(cfg)
    targets = torch.tensor([[3, 7, 2, 9], [5, 5, 1, 0], [11, 4, 8, 6]])
    tlens = torch.tensor([4, 3, 4])
    lens = torch.tensor([4 * 14 + 7, 4 * 11 + 7, 4 * 12 + 7])
    feats = torch.randn(3, int(lens.max()), 80)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(250):
        out = model(feats, lens, targets, tlens, chunk_size=-1)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    hyps = greedy_decode(model, feats, lens)
    want = [targets[n, : int(tlens[n])].tolist() for n in range(3)]
    assert hyps == want
    assert model.training  # greedy_decode restores the mode
