"""The edgeasr CLI: registry, --version without torch, score, doctor, error reporting."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeasr import __version__, cli
from edgeasr.cli import Command, main


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_version_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from edgeasr.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "main(['doctor', '--no-audio'])\n"
        "heavy = [m for m in ('torch', 'edgeasr.metrics') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"edgeasr {__version__}\n")


def test_python_dash_m(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "edgeasr", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"edgeasr {__version__}"


def test_score_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", [
        {"id": "a", "text": "The cat sat.", "audio": "a.wav", "duration": 1.0},
        {"id": "b", "text": "hello world"},
        {"id": "c", "text": "only in refs"},
    ])
    hyp = _jsonl(tmp_path / "hyp.jsonl", [
        {"id": "a", "text": "the bat sat down"},
        {"id": "b", "text": "hello world"},
        {"id": "z", "text": "stray"},
    ])
    assert main(["score", str(ref), str(hyp), "--worst", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    # a: 1 S + 1 I; b: 0; c: 3 D (missing hypothesis) -> 5 errors / 8 words.
    assert out[0] == "WER 62.50% [5 / 8 words, 1 sub, 1 ins, 3 del, 3 utts]"
    assert out[1].startswith("CER ")
    assert out[2] == "SER 66.67% [2 / 3 utts]"
    assert "1 ids without a hypothesis (scored as empty): c" in out
    assert "1 ids without a reference (ignored): z" in out
    assert "Worst 1 utterances:" in out
    assert "c  3 errors / 3 words (S 0, I 0, D 3)" in out
    assert main(["score", str(ref), str(hyp), "--strict"]) == 1


def test_score_kaldi_text_and_no_normalize(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref.txt"
    ref.write_text("u1 I have 3 cats\nu2 yes\n", encoding="utf-8")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("u1 i have three cats\nu2 yes\n", encoding="utf-8")
    assert main(["score", str(ref), str(hyp)]) == 0
    assert capsys.readouterr().out.startswith("WER 0.00% [0 / 5 words")
    assert main(["score", str(ref), str(hyp), "--no-normalize"]) == 0
    assert capsys.readouterr().out.startswith("WER 40.00% [2 / 5 words, 2 sub")


@pytest.mark.parametrize(
    ("ref_lines", "message"),
    [
        (['{"id": "a", "text": "x"', ""], "ref.jsonl:1: bad JSON"),
        (['{"id": "a"}'], "ref.jsonl:1: missing or non-string 'text'"),
        (['{"text": "x"}'], "ref.jsonl:1: missing or non-string 'id'"),
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], "ref.jsonl:2: duplicate id"),
        ([""], "no references"),
    ],
)
def test_score_bad_input_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        ref_lines: list[str], message: str) -> None:
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(ref_lines) + "\n", encoding="utf-8")
    hyp = _jsonl(tmp_path / "hyp.jsonl", [{"id": "a", "text": "x"}])
    assert main(["score", str(ref), str(hyp)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeasr: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_score_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(tmp_path / "nope.jsonl"), str(tmp_path / "h.jsonl")]) == 2
    assert capsys.readouterr().err == f"edgeasr: error: {tmp_path / 'nope.jsonl'}: file not found\n"


def test_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"edgeasr {__version__}\npython ")
    assert "CPUExecutionProvider" in out
    for name in cli.DOCTOR_PACKAGES:
        assert f"  {name} " in out
    assert "audio devices:" in out
    model, flags = cli._cpu_info()
    assert model and set(flags) <= set(cli.CPU_FLAGS)


def test_registry_lazy_import_and_project_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", list(cli.COMMANDS))
    cli.register(Command("needs-missing", "x", "edgeasr_no_such_module_xyz"))
    # Registered but never imported unless selected: other commands still work.
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "needs-missing" in capsys.readouterr().out
    assert main(["needs-missing"]) == 2
    assert "'needs-missing' needs edgeasr_no_such_module_xyz" in capsys.readouterr().err

    calls: list[argparse.Namespace] = []

    def fake_add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, default=1)

    def fake_run(args: argparse.Namespace) -> int:
        calls.append(args)
        if args.n < 0:
            from edgeasr.manifest import ManifestError
            raise ManifestError("m.jsonl:3: duplicate id 'x'")
        return 0

    monkeypatch.setattr(cli, "_fake_add", fake_add, raising=False)
    monkeypatch.setattr(cli, "_fake_run", fake_run, raising=False)
    cli.register(Command("fake", "a test command", "edgeasr.cli", "_fake_add", "_fake_run"))
    assert main(["fake", "--n", "3"]) == 0
    assert calls[-1].n == 3
    assert main(["fake", "--n", "-1"]) == 2
    assert capsys.readouterr().err == "edgeasr: error: m.jsonl:3: duplicate id 'x'\n"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "score" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_bug_keeps_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(cli, "COMMANDS", list(cli.COMMANDS))
    monkeypatch.setattr(cli, "_broken", broken, raising=False)
    monkeypatch.setattr(cli, "_noargs", lambda p: None, raising=False)
    cli.register(Command("broken", "x", "edgeasr.cli", "_noargs", "_broken"))
    with pytest.raises(ZeroDivisionError):
        main(["broken"])
