"""edgeasr.features: the sherpa-onnx fbank definition, online/offline equality, known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeasr.audio import load_audio
from edgeasr.features import FeatureConfig, OnlineFeatureExtractor, compute_features

FLT_EPSILON = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------------------------------------
# An independent float64 numpy implementation of Kaldi's fbank (feature-window.cc,
# mel-computations.cc, feature-fbank.cc), written from the Kaldi definitions, default window only.
# ---------------------------------------------------------------------------------------------
def kaldi_mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def reference_mel_banks(cfg: FeatureConfig) -> np.ndarray:
    """[num_bins, fft/2] triangular weights, evaluated at FFT bin centres on the mel axis."""
    n_fft = 512
    high = cfg.sample_rate / 2 + cfg.high_freq if cfg.high_freq <= 0 else cfg.high_freq
    lo, hi = kaldi_mel(cfg.low_freq), kaldi_mel(high)
    delta = (hi - lo) / (cfg.num_mel_bins + 1)
    mel = kaldi_mel(np.arange(n_fft // 2) * cfg.sample_rate / n_fft)
    banks = np.zeros((cfg.num_mel_bins, n_fft // 2))
    for b in range(cfg.num_mel_bins):
        left, centre, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        up = (mel > left) & (mel <= centre)
        down = (mel > centre) & (mel < right)
        banks[b, up] = (mel[up] - left) / (centre - left)
        banks[b, down] = (right - mel[down]) / (right - centre)
    return banks


def reference_fbank(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n, length, shift = len(x), 400, 160
    num_frames = (n + shift // 2) // shift
    starts = np.arange(num_frames) * shift + shift // 2 - length // 2
    idx = (starts[:, None] + np.arange(length)) % (2 * n)
    idx = np.where(idx >= n, 2 * n - 1 - idx, idx)  # mirror at both ends, as Kaldi does
    frames = x[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], 1)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
    energies = power[:, :256] @ reference_mel_banks(cfg).T
    return np.log(np.maximum(energies, FLT_EPSILON))


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------
def test_defaults_are_sherpa_onnx_defaults():
    c = FeatureConfig()
    assert (c.sample_rate, c.num_mel_bins, c.frame_length_ms, c.frame_shift_ms) == (
        16000,
        80,
        25,
        10,
    )
    assert (c.dither, c.snip_edges, c.low_freq, c.high_freq) == (0.0, False, 20.0, -400.0)
    assert (c.preemph_coeff, c.remove_dc_offset, c.window_type) == (0.97, True, "povey")
    assert c.round_to_power_of_two and not c.is_librosa and c.normalize_samples
    assert (c.window_size, c.window_shift, c.padded_window_size) == (400, 160, 512)
    assert c.effective_high_freq == 7600.0
    opts = c.to_knf()
    assert opts.frame_opts.dither == 0 and not opts.frame_opts.snip_edges
    assert opts.mel_opts.num_bins == 80 and opts.mel_opts.high_freq == -400


def test_dict_roundtrip_and_unknown_keys():
    c = FeatureConfig(num_mel_bins=64, high_freq=7000.0)
    assert FeatureConfig.from_dict(c.to_dict()) == c
    assert FeatureConfig.from_dict({}) == FeatureConfig()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_bins'\]"):
        FeatureConfig.from_dict({"num_bins": 80})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_mel_bins": 2}, "num_mel_bins"),
        ({"high_freq": 9000.0}, "high_freq"),
        ({"low_freq": 7700.0}, "high_freq"),
        ({"frame_shift_ms": 30.0}, "frame_shift_ms"),
        ({"window_type": "hann"}, "window_type"),
        ({"dither": -1.0}, "dither"),
        ({"sample_rate": 0}, "sample_rate"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FeatureConfig(**kwargs)


@pytest.mark.parametrize(
    ("n", "frames"), [(0, 0), (79, 0), (80, 1), (16000, 100), (16079, 100), (16080, 101)]
)
def test_num_frames_matches_extractor(n, frames):
    cfg = FeatureConfig()
    assert cfg.num_frames(n) == frames
    assert compute_features(np.full(n, 0.01, dtype=np.float32)).shape == (frames, 80)


# ---------------------------------------------------------------------------------------------
# Known values
# ---------------------------------------------------------------------------------------------
def test_silence_is_the_log_floor():
    feats = compute_features(np.zeros(1600, dtype=np.float32))
    assert feats.shape == (10, 80)
    np.testing.assert_array_equal(feats, np.float32(math.log(FLT_EPSILON)))  # -15.942385


def test_tone_peaks_in_the_expected_mel_bin(make_signal):
    cfg = FeatureConfig()
    feats = compute_features(make_signal("sine", duration=1.0, freq=1000.0, amplitude=0.5), cfg)
    # 1 kHz lies on mel 1000.0; the bin whose triangle is highest there wins.
    lo, hi = kaldi_mel(20.0), kaldi_mel(7600.0)
    delta = (hi - lo) / 81
    centres = lo + delta * np.arange(1, 81)
    weight_at_tone = np.clip(1 - np.abs(kaldi_mel(1000.0) - centres) / delta, 0, None)
    expected = int(np.argmax(weight_at_tone))
    assert expected == 27
    assert np.all(np.argmax(feats[2:-2], axis=1) == expected)
    # Far from the tone only window side lobes remain: > 8 nats (~35 dB) below the peak.
    assert feats[50, expected] - feats[50, 70] > 8.0


@pytest.mark.parametrize("kind", ["sine", "chirp", "noise", "speechlike"])
def test_matches_independent_numpy_fbank(make_signal, kind):
    x = make_signal(kind, duration=0.37, freq=1000.0 if kind == "sine" else 7000.0, seed=3)
    ours = compute_features(x)
    ref = reference_fbank(x, FeatureConfig())
    assert ours.shape == ref.shape == (37, 80)
    # Bins far below the frame energy (side lobes of a pure tone) carry float32 FFT rounding.
    loud = ref > ref.max(axis=1, keepdims=True) - 12.0
    assert np.max(np.abs(ours - ref)[loud]) < 1e-4
    assert np.max(np.abs(ours - ref)) < 5e-2


def test_hard_coded_tone_values(make_signal):
    """Spot values checked against reference_fbank above (float64) when this test was written."""
    x = make_signal("sine", duration=0.2, freq=1000.0, amplitude=0.5)
    feats, ref = compute_features(x), reference_fbank(x, FeatureConfig())
    np.testing.assert_allclose(feats[10, [26, 27, 28]], ref[10, [26, 27, 28]], atol=1e-4)
    np.testing.assert_allclose(feats[10, [26, 27, 28]], [3.35017, 5.90711, 5.86484], atol=1e-4)


def test_int16_scale_option_adds_log_32768_squared(make_signal):
    x = make_signal("noise", duration=0.2, amplitude=0.1)
    a = compute_features(x)
    b = compute_features(x, FeatureConfig(normalize_samples=False))
    np.testing.assert_allclose(b - a, 2 * math.log(32768.0), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=5000),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
    read_every_chunk=st.booleans(),
)
def test_online_equals_offline_for_any_chunking(n, cuts, read_every_chunk):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    offline = compute_features(x)
    ex = OnlineFeatureExtractor()
    got = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        ex.accept_waveform(x[a:b])
        if read_every_chunk:
            got.append(ex.read_frames())
    ex.input_finished()
    got.append(ex.read_frames())
    online = np.concatenate(got)
    assert online.shape == offline.shape == (FeatureConfig().num_frames(n), 80)
    if offline.size:
        assert np.max(np.abs(online - offline)) <= 1e-5


def test_frames_become_ready_as_soon_as_complete():
    ex = OnlineFeatureExtractor()
    ex.accept_waveform(np.full(399, 0.1, dtype=np.float32))
    # Frame 0 spans samples -120..279 (left edge mirrored), frame 1 spans 40..439.
    assert ex.num_frames_ready == 1
    ex.accept_waveform(np.full(41, 0.1, dtype=np.float32))
    assert ex.num_frames_ready == 2
    ex.input_finished()
    assert ex.num_frames_ready == FeatureConfig().num_frames(440) == 3
    assert ex.is_last_frame(2) and not ex.is_last_frame(1)


def test_absolute_indices_survive_pop(make_signal):
    x = make_signal("speechlike", duration=0.5)
    full = compute_features(x)
    ex = OnlineFeatureExtractor()
    ex.accept_waveform(x)
    ex.input_finished()
    np.testing.assert_array_equal(ex.get_frames(10, 5), full[10:15])
    ex.pop(12)
    assert (ex.first_frame, ex.num_frames_available) == (12, 38)
    np.testing.assert_array_equal(ex.get_frames(12, 3), full[12:15])
    with pytest.raises(IndexError, match="already popped"):
        ex.get_frames(11, 1)
    with pytest.raises(IndexError, match="only 50 ready"):
        ex.get_frames(45, 6)
    ex.reset()
    assert ex.num_frames_ready == 0 and ex.first_frame == 0


def test_bad_input_is_rejected_with_a_clear_error():
    ex = OnlineFeatureExtractor()
    with pytest.raises(ValueError, match="resample"):
        ex.accept_waveform(np.zeros(10, dtype=np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="pcm_to_float"):
        ex.accept_waveform(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match="1-D"):
        ex.accept_waveform(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ex.accept_waveform(np.array([0.0, np.nan], dtype=np.float32))
    ex.input_finished()
    with pytest.raises(RuntimeError, match="reset"):
        ex.accept_waveform(np.zeros(10, dtype=np.float32))


def test_real_speech_online_equals_offline(speech_files):
    x = load_audio(speech_files[0])
    offline = compute_features(x)
    ex = OnlineFeatureExtractor()
    for i in range(0, len(x), 1234):
        ex.accept_waveform(x[i : i + 1234])
    ex.input_finished()
    online = ex.read_frames()
    assert online.shape == offline.shape == (FeatureConfig().num_frames(len(x)), 80)
    assert np.max(np.abs(online - offline)) <= 1e-5
    assert -16.0 < offline.mean() < 5.0  # [-1, 1] input scale, not int16 scale


# ---------------------------------------------------------------------------------------------
# Torch batch path (edgeasr.train.features): parity with the runtime extractor
# ---------------------------------------------------------------------------------------------
def _batch(signals: list[np.ndarray]):
    torch = pytest.importorskip("torch")
    lengths = torch.tensor([len(s) for s in signals])
    wav = torch.zeros(len(signals), int(lengths.max()))
    for i, s in enumerate(signals):
        wav[i, : len(s)] = torch.from_numpy(s)
    return wav, lengths


def test_torch_matches_runtime_on_tone(make_signal):
    pytest.importorskip("torch")
    from edgeasr.train.features import compute_features_torch

    x = make_signal("sine", duration=1.0, freq=1000.0, amplitude=0.5)
    feats, lens = compute_features_torch(*_batch([x]))
    ref = compute_features(x)
    assert lens.tolist() == [100] and feats.shape == (1, 100, 80)
    assert np.max(np.abs(feats[0].numpy() - ref)) <= 1e-3


def test_torch_matches_runtime_on_real_speech(speech_files):
    pytest.importorskip("torch")
    from edgeasr.train.features import compute_features_torch

    signals = [load_audio(p) for p in speech_files]
    feats, lens = compute_features_torch(*_batch(signals))
    for i, x in enumerate(signals):
        ref = compute_features(x)
        assert int(lens[i]) == len(ref) == FeatureConfig().num_frames(len(x))
        ours = feats[i, : len(ref)].numpy()
        diff = np.abs(ours - ref)
        # kaldi-native-fbank computes in float32: in bins more than ~15 nats (65 dB) below the
        # frame's loudest bin its own FFT rounding reaches a few 1e-3 (it differs from the exact
        # float64 value by as much; see the float64 test below). Everywhere else: <= 1e-3.
        audible = ref > ref.max(axis=1, keepdims=True) - 15.0
        assert audible.mean() > 0.95
        assert diff[audible].max() <= 1e-3
        assert diff.max() <= 5e-3
        assert (diff > 1e-3).mean() < 1e-3
        assert np.all(feats[i, len(ref) :].numpy() == 0.0)


def test_torch_float64_is_exact_kaldi_math(speech_files, make_signal):
    """Against the independent float64 numpy Kaldi fbank the torch path agrees to ~1e-6 in all
    bins: the residual vs kaldi-native-fbank is that library's float32 rounding."""
    torch = pytest.importorskip("torch")
    from edgeasr.train.features import compute_features_torch

    for x in [load_audio(speech_files[1]), make_signal("chirp", duration=0.5, freq=7000.0)]:
        feats, _ = compute_features_torch(*_batch([x]), dtype=torch.float64)
        assert np.max(np.abs(feats[0].numpy() - reference_fbank(x, FeatureConfig()))) < 1e-5


def test_torch_batch_equals_single_and_handles_short_inputs(make_signal):
    pytest.importorskip("torch")
    from edgeasr.train.features import compute_features_torch

    long = make_signal("speechlike", duration=0.8)
    short = make_signal("noise", duration=0.123, amplitude=0.05, seed=5)
    signals = [long, short, short[:79], short[:0], short[:100]]
    feats, lens = compute_features_torch(*_batch(signals))
    assert lens.tolist() == [80, 12, 0, 0, 1]
    assert feats.shape == (5, 80, 80)
    alone, _ = compute_features_torch(*_batch([short]))
    np.testing.assert_allclose(feats[1, :12].numpy(), alone[0].numpy(), atol=1e-5)
    # A 100-sample utterance: its single frame mirrors the signal several times, as Kaldi does.
    np.testing.assert_allclose(feats[4, :1].numpy(), compute_features(short[:100]), atol=1e-3)


def test_torch_non_default_config(make_signal):
    pytest.importorskip("torch")
    from edgeasr.train.features import compute_features_torch

    x = make_signal("noise", duration=0.5, amplitude=0.2, seed=7)
    for cfg in [
        FeatureConfig(num_mel_bins=64, window_type="hamming", high_freq=6000.0),
        FeatureConfig(sample_rate=8000, num_mel_bins=40, low_freq=60.0, normalize_samples=False),
        FeatureConfig(snip_edges=True, remove_dc_offset=False, preemph_coeff=0.0),
    ]:
        feats, lens = compute_features_torch(*_batch([x]), config=cfg)
        ref = compute_features(x, cfg)
        assert int(lens[0]) == len(ref) == cfg.num_frames(len(x))
        assert np.max(np.abs(feats[0, : len(ref)].numpy() - ref)) <= 1e-3


def test_torch_dither_is_seeded_and_errors_are_clear(make_signal):
    torch = pytest.importorskip("torch")
    from edgeasr.train.features import FbankTorch, compute_features_torch

    wav, lens = _batch([make_signal("silence", duration=0.1)])
    fb = FbankTorch(FeatureConfig(dither=1e-4))
    a, _ = fb(wav, lens, generator=torch.Generator().manual_seed(0))
    b, _ = fb(wav, lens, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    # Same noise level as kaldi-native-fbank's own dither (Gaussian, std = dither).
    knf_dithered = compute_features(make_signal("silence", duration=0.1), fb.config)
    assert knf_dithered.mean() > math.log(FLT_EPSILON) + 2.0
    assert abs(float(a.mean()) - float(knf_dithered.mean())) < 0.3
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        compute_features_torch(wav[0])
    with pytest.raises(ValueError, match="lengths must lie in"):
        compute_features_torch(wav, lens + 1)
    with pytest.raises(ValueError, match="Kaldi mel banks only"):
        compute_features_torch(wav, lens, config=FeatureConfig(is_librosa=True))


@pytest.mark.parametrize("window", ["hamming", "hanning", "blackman", "sine"])
def test_torch_window_types_match_runtime(make_signal, window):
    pytest.importorskip("torch")
    from edgeasr.train.features import compute_features_torch

    cfg = FeatureConfig(window_type=window)
    x = make_signal("noise", duration=0.5, amplitude=0.2, seed=11)
    feats, _ = compute_features_torch(*_batch([x]), config=cfg)
    assert np.max(np.abs(feats[0].numpy() - compute_features(x, cfg))) <= 1e-3
