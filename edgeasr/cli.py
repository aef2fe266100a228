"""The ``edgeasr`` command (also ``python -m edgeasr``).

Subcommands come from a table, :data:`COMMANDS`, of :class:`Command` entries naming the module
that implements them. Only the module of the subcommand being run is imported, so ``edgeasr
--version`` / ``edgeasr --help`` are instant and a runtime command never pays for (or needs)
torch. To add a subcommand, write a module with::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

and add one ``Command("name", "one-line help", "edgeasr.some.module")`` line to
:data:`COMMANDS` (or call :func:`register`).

Errors: an exception defined by edgeasr itself (``AudioError``, ``ManifestError``,
``TokenizerError``, :class:`CLIError`, ...), or an ``OSError`` about a user's file, is input the
user can fix: it is printed as one line ``edgeasr: error: ...`` with exit status 2. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeasr import __version__
from edgeasr.errors import EdgeAsrError

__all__ = ["COMMANDS", "CLIError", "Command", "build_parser", "main", "register"]

PROG = "edgeasr"


class CLIError(EdgeAsrError):
    """Bad command-line input; printed as ``edgeasr: error: <message>``, exit status 2."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, and where its implementation lives.

    ``module`` is imported only when this subcommand runs; ``add_arguments`` and ``run`` name the
    module's functions that fill in the subparser and execute the parsed arguments.
    """

    name: str
    help: str
    module: str
    add_arguments: str = "add_arguments"
    run: str = "run"


COMMANDS: list[Command] = [
    Command("demo", "stream the bundled sample recordings through the default model",
            "edgeasr.commands.demo"),
    Command("transcribe", "recognize audio files (text, JSON, token timestamps)",
            "edgeasr.commands.transcribe"),
    Command("stream", "play a file through a live stream, showing partial results",
            "edgeasr.commands.stream_cmd"),
    Command("eval", "WER, real-time factors and gate skip rates on a JSONL manifest",
            "edgeasr.commands.eval"),
    Command("score", "WER/CER of hypotheses against references (JSONL or Kaldi text)",
            "edgeasr.cli", "_score_arguments", "_score_run"),
    Command("doctor", "report versions, ONNX Runtime providers, audio devices and CPU features",
            "edgeasr.cli", "_doctor_arguments", "_doctor_run"),
    Command("mic", "live transcription from a microphone", "edgeasr.apps.mic"),
    Command("serve", "WebSocket streaming recognition server with a browser demo page",
            "edgeasr.apps.server"),
]


def register(command: Command) -> None:
    """Add (or replace, by name) a subcommand."""
    for i, existing in enumerate(COMMANDS):
        if existing.name == command.name:
            COMMANDS[i] = command
            return
    COMMANDS.append(command)


def _load(command: Command) -> tuple[Callable[..., None], Callable[..., int]]:
    try:
        module = importlib.import_module(command.module)
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        raise CLIError(
            f"'{command.name}' needs {missing!s}, which is not installed "
            f"(install the matching extra, e.g. pip install 'edgeasr[train]')"
        ) from None
    return getattr(module, command.add_arguments), getattr(module, command.run)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the ``selected`` subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="On-device streaming speech recognition."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.name == selected:
            add_arguments, run = _load(command)
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def _selected_command(argv: Sequence[str]) -> str | None:
    names = {c.name for c in COMMANDS}
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in names else None
    return None


def _is_user_error(e: BaseException) -> bool:
    return isinstance(e, (EdgeAsrError, OSError))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(_selected_command(args_list))
        args = parser.parse_args(args_list)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not _is_user_error(e):
            raise
        message = str(e)
        if isinstance(e, OSError) and e.filename is not None and e.strerror:
            message = f"{e.filename}: {e.strerror}"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


# ============================================================================ score


def _read_texts(path: Path) -> dict[str, str]:
    """``{id: text}`` from a JSONL file (fields ``id``, ``text``) or a Kaldi ``text`` file
    (``<id> <words...>`` lines); JSONL when the name ends in ``.jsonl``/``.json``."""
    if not path.is_file():
        raise CLIError(f"{path}: file not found")
    texts: dict[str, str] = {}
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            if jsonl:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CLIError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(record, dict):
                    raise CLIError(f"{where}: expected a JSON object")
                uid, text = record.get("id"), record.get("text")
                if not isinstance(uid, str) or not uid:
                    raise CLIError(f"{where}: missing or non-string 'id'")
                if not isinstance(text, str):
                    raise CLIError(f"{where}: missing or non-string 'text'")
            else:
                uid, _, text = line.strip().partition(" ")
            if uid in texts:
                raise CLIError(f"{where}: duplicate id {uid!r}")
            texts[uid] = text
    return texts


def _score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=Path, help="references: JSONL (id, text) or Kaldi text file")
    p.add_argument("hyp", type=Path, help="hypotheses: JSONL (id, text) or Kaldi text file")
    p.add_argument("--worst", type=int, default=10, metavar="N",
                   help="show the N utterances with most word errors (default 10)")
    p.add_argument("--no-normalize", action="store_true",
                   help="score the texts as they are (default: normalize_text on both sides)")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 1) when an id is missing on either side")


def _score_run(args: argparse.Namespace) -> int:
    from edgeasr.metrics import cer, format_alignment, wer

    if args.worst < 0:
        raise CLIError("--worst must be >= 0")
    refs, hyps = _read_texts(args.ref), _read_texts(args.hyp)
    if not refs:
        raise CLIError(f"{args.ref}: no references")
    no_hyp = [i for i in refs if i not in hyps]
    no_ref = [i for i in hyps if i not in refs]
    ids = list(refs)
    ref_texts = [refs[i] for i in ids]
    hyp_texts = [hyps.get(i, "") for i in ids]  # a missing hypothesis scores as all deletions
    normalize = not args.no_normalize
    w = wer(ref_texts, hyp_texts, ids=ids, normalize=normalize)
    c = cer(ref_texts, hyp_texts, ids=ids, normalize=normalize)
    print(w.summary())
    print(c.summary())
    sentence_errors = sum(u.counts.errors > 0 for u in w.utterances)
    print(f"SER {100 * sentence_errors / len(ids):.2f}% [{sentence_errors} / {len(ids)} utts]")
    for label, missing in (("hypothesis", no_hyp), ("reference", no_ref)):
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            note = "scored as empty" if label == "hypothesis" else "ignored"
            print(f"{len(missing)} ids without a {label} ({note}): {shown}")
    worst = w.worst(args.worst)
    if worst:
        print(f"\nWorst {len(worst)} utterances:")
        for u in worst:
            k = u.counts
            print(f"\n{u.id}  {k.errors} errors / {k.ref_len} words "
                  f"(S {k.substitutions}, I {k.insertions}, D {k.deletions})")
            print(format_alignment(u.alignment))
    if args.strict and (no_hyp or no_ref):
        return 1
    return 0


# ============================================================================ doctor

DOCTOR_PACKAGES = (
    "numpy", "onnxruntime", "onnxruntime-gpu", "sentencepiece", "soundfile", "soxr",
    "kaldi-native-fbank", "torch", "executorch", "onnx", "sherpa-onnx", "llama-cpp-python",
    "sounddevice", "websockets",
)

#: CPU features that decide which kernels ONNX Runtime / ExecuTorch / llama.cpp can use.
CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "neon", "asimd", "asimddp", "asimdhp", "sve", "sve2", "i8mm", "bf16",
)


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_info() -> tuple[str, list[str]]:
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, [f for f in CPU_FLAGS if f in flags]


def _onnxruntime_providers() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime not installed"
    return ", ".join(onnxruntime.get_available_providers())


def _audio_devices() -> list[str]:
    try:
        import sounddevice
    except ImportError:
        return ["sounddevice not installed (pip install 'edgeasr[mic]')"]
    except OSError as e:  # the module imports but cannot load the PortAudio library
        return [f"sounddevice cannot load PortAudio: {e} (apt-get install libportaudio2)"]
    try:
        devices = sounddevice.query_devices()
        default_in = sounddevice.default.device[0]
    except Exception as e:  # PortAudio errors have their own type per version
        return [f"cannot query audio devices: {e}"]
    lines = []
    for i, d in enumerate(devices):
        if d["max_input_channels"] > 0:
            mark = " (default)" if i == default_in else ""
            lines.append(f"input {i}: {d['name']}, {d['max_input_channels']} ch, "
                         f"{d['default_samplerate']:.0f} Hz{mark}")
    return lines or ["no input devices"]


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-audio", action="store_true", help="skip the audio device query")


def _doctor_run(args: argparse.Namespace) -> int:
    import os
    import platform

    width = max(len(n) for n in DOCTOR_PACKAGES) + 2
    print(f"edgeasr {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"platform {platform.platform()}")
    model, flags = _cpu_info()
    print(f"cpu {model}; {os.cpu_count()} logical cores; {platform.machine()}")
    print(f"cpu features: {' '.join(flags) if flags else 'none of the tracked ones'}")
    print("\npackages:")
    for name in DOCTOR_PACKAGES:
        print(f"  {name.ljust(width)}{_package_version(name)}")
    print(f"\nonnxruntime providers: {_onnxruntime_providers()}")
    if not args.no_audio:
        print("\naudio devices:")
        for line in _audio_devices():
            print(f"  {line}")
    return 0
