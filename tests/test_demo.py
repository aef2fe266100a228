"""`edgeasr demo`: plays the shipped samples through a stream and scores them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeasr.cli import main
from edgeasr.commands.demo import SAMPLES
from edgeasr.manifest import read_manifest


@pytest.fixture
def bundle(tiny_bundle) -> Path:
    return tiny_bundle().root


def test_samples_ship_with_references() -> None:
    cuts = read_manifest(SAMPLES, check_audio=True)
    assert [c.id for c in cuts] == ["sample1", "sample2", "sample3"]
    assert all(c.text and 2.0 < c.duration < 10.0 for c in cuts)


def test_demo_streams_every_sample_and_scores(bundle, capsys) -> None:
    from edgeasr import Recognizer

    assert main(["demo", "--fast", "--bundle", str(bundle)]) == 0
    out = capsys.readouterr().out
    cuts = read_manifest(SAMPLES)
    for cut in cuts:
        assert f"{cut.id}  ({cut.duration:.1f} s)  reference: {cut.text}" in out
    m = re.search(r"WER over 3 samples: ([0-9.]+)%", out)
    assert m is not None
    # What the demo shows as final text is what whole-file recognition gives.
    rec = Recognizer.from_bundle(bundle)
    texts = [rec.transcribe(str(c.audio)).text for c in cuts]
    for text in texts:
        if text:
            assert text in out
    assert "real-time factor:" in out


def test_demo_without_bundle_is_one_clear_error(tmp_path, capsys) -> None:
    assert main(["demo", "--fast", "--bundle", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeasr: error:") and "missing" in err
