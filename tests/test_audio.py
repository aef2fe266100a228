"""edgeasr.audio: decoding, downmix, resampling, raw PCM and every AudioError case."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from edgeasr.audio import (
    AudioError,
    StreamResampler,
    load_audio,
    pcm_to_float,
    probe_audio,
    resample,
)


def _dominant_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.mark.parametrize(
    ("fmt", "subtype", "tol"),
    [("WAV", "PCM_16", 1e-4), ("WAV", "FLOAT", 1e-7), ("FLAC", "PCM_24", 1e-6)],
)
def test_lossless_roundtrip_at_16k(tmp_path, make_signal, fmt, subtype, tol):
    x = make_signal("chirp", duration=0.5, freq=4000)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, 16000, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < tol


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_lossy_formats_decode_and_resample(tmp_path, make_signal, fmt):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}")
    x = make_signal("sine", duration=1.0, sample_rate=44100, freq=1000)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, 44100, format=fmt)
    y = load_audio(path, target_rate=16000)
    # mp3 encoders add a few ms of priming delay/padding; the length stays within 5%.
    assert abs(len(y) - 16000) < 800
    assert _dominant_freq(y, 16000) == pytest.approx(1000, abs=2)
    assert 0.3 < np.sqrt(np.mean(y[2000:-2000] ** 2)) / (0.5 / np.sqrt(2)) < 1.1


def test_stereo_is_averaged_and_resampled(tmp_path, make_signal):
    left = make_signal("sine", duration=1.0, sample_rate=48000, freq=440, amplitude=0.6)
    stereo = np.stack([left, 0.5 * left], axis=1)
    path = tmp_path / "st.wav"
    sf.write(path, stereo, 48000, subtype="FLOAT")
    native = load_audio(path, target_rate=None)
    np.testing.assert_allclose(native, 0.75 * left, atol=1e-7)
    y = load_audio(path, target_rate=16000)
    assert len(y) == 16000
    ref = make_signal("sine", duration=1.0, sample_rate=16000, freq=440, amplitude=0.45)
    # HQ soxr is linear phase with compensated delay: the resampled sine lines up with the
    # sine synthesized at 16 kHz away from the edges.
    assert np.max(np.abs(y[500:-500] - ref[500:-500])) < 1e-3


def test_probe_reads_header_only(tmp_path, make_signal):
    path = tmp_path / "p.flac"
    sf.write(path, np.stack([make_signal(duration=1.5, sample_rate=22050)] * 3, axis=1), 22050)
    info = probe_audio(path)
    assert (info.sample_rate, info.num_channels, info.num_frames) == (22050, 3, 33075)
    assert info.duration == pytest.approx(1.5)
    assert info.format == "FLAC" and info.source == str(path)


def test_encoded_bytes_are_accepted(tmp_path, make_signal):
    path = tmp_path / "b.wav"
    x = make_signal(duration=0.25)
    sf.write(path, x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path.read_bytes()), x)
    assert probe_audio(path.read_bytes()).source == "<bytes>"


def test_real_speech_file(speech_files):
    info = probe_audio(speech_files[0])
    y = load_audio(speech_files[0])
    assert info.sample_rate == 16000
    assert len(y) == info.num_frames
    assert 0.01 < np.abs(y).max() <= 1.0


def _error(source, **kwargs) -> AudioError:
    with pytest.raises(AudioError) as exc:
        load_audio(source, **kwargs)
    return exc.value


def test_missing_file_and_directory(tmp_path):
    err = _error(tmp_path / "nope.wav")
    assert "nope.wav" in str(err) and "not found" in str(err)
    assert "directory" in str(_error(tmp_path))
    assert isinstance(err, ValueError)


def test_empty_and_zero_length(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert "empty file" in str(_error(tmp_path / "empty.wav"))
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1)), 16000)
    assert "no samples" in str(_error(tmp_path / "zero.wav"))
    assert str(_error(b"")) == "<bytes>: empty input (0 bytes)"


def test_corrupt_header_and_unsupported_format(tmp_path, make_signal):
    good = tmp_path / "good.wav"
    sf.write(good, make_signal(duration=0.1), 16000)
    (tmp_path / "trunc.wav").write_bytes(good.read_bytes()[:30])
    err = _error(tmp_path / "trunc.wav")
    assert "trunc.wav" in str(err) and "corrupt header" in str(err)
    (tmp_path / "notes.txt").write_text("this is not audio at all\n" * 10)
    assert "unsupported format" in str(_error(tmp_path / "notes.txt"))
    assert str(_error(b"abc")).startswith("<bytes>: cannot decode")


def test_nan_and_inf_samples(tmp_path):
    x = np.full(160, 0.1, dtype=np.float32)
    x[[3, 50]] = [np.nan, np.inf]
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    assert "2 NaN or infinite" in str(_error(tmp_path / "nan.wav"))


@pytest.mark.parametrize("rate", [500, 400000])
def test_absurd_file_sample_rate(tmp_path, rate):
    sf.write(tmp_path / "r.wav", np.zeros(100, dtype=np.float32), rate)
    assert f"sample rate {rate} Hz is outside" in str(_error(tmp_path / "r.wav"))


def test_bad_target_rate(tmp_path, make_signal):
    sf.write(tmp_path / "a.wav", make_signal(duration=0.1), 16000)
    assert "outside" in str(_error(tmp_path / "a.wav", target_rate=16))
    assert "whole number" in str(_error(tmp_path / "a.wav", target_rate=16000.5))


def test_pcm_int16_bytes():
    ints = np.array([0, 16384, -32768, 32767], dtype="<i2")
    y = pcm_to_float(ints.tobytes())
    np.testing.assert_array_equal(y, np.array([0, 0.5, -1.0, 32767 / 32768], dtype=np.float32))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(pcm_to_float(ints), y)


def test_pcm_stereo_and_float32():
    frames = np.array([[0.5, -0.5], [0.25, 0.75]], dtype="<f4")
    y = pcm_to_float(frames.tobytes(), dtype="float32", num_channels=2)
    np.testing.assert_allclose(y, [0.0, 0.5])


def test_pcm_errors():
    with pytest.raises(AudioError, match=r"<bytes>: 3 bytes is not a whole number of int16"):
        pcm_to_float(b"\x00\x01\x02")
    with pytest.raises(AudioError, match="int16 frames"):
        pcm_to_float(b"\x00" * 6, num_channels=2)
    with pytest.raises(AudioError, match="NaN"):
        pcm_to_float(np.array([np.nan], dtype=np.float32).tobytes(), dtype="float32")
    with pytest.raises(AudioError, match="expected int16"):
        pcm_to_float(np.zeros(4, dtype=np.float32))
    with pytest.raises(AudioError, match="unsupported PCM dtype"):
        pcm_to_float(b"", dtype="int8")  # type: ignore[arg-type]


def test_resample_preserves_tone_and_length(make_signal):
    x = make_signal("sine", duration=1.0, sample_rate=8000, freq=700)
    y = resample(x, 8000, 16000)
    assert len(y) == 16000 and y.dtype == np.float32
    assert _dominant_freq(y, 16000) == pytest.approx(700, abs=1)
    assert resample(x, 8000, 8000) is not None and np.array_equal(resample(x, 8000, 8000), x)
    with pytest.raises(AudioError, match="outside"):
        resample(x, 8000, 999_999)


def test_stream_resampler_matches_offline(make_signal):
    x = make_signal("chirp", duration=1.0, sample_rate=44100, freq=6000)
    rs = StreamResampler(44100, 16000)
    pieces = [rs.process(x[i : i + 1234]) for i in range(0, len(x), 1234)]
    y = np.concatenate([*pieces, rs.flush()])
    ref = resample(x, 44100, 16000)
    assert abs(len(y) - len(ref)) <= 1
    n = min(len(y), len(ref))
    assert np.max(np.abs(y[:n] - ref[:n])) < 1e-3
