"""``python -m benchmarks.transducer_llama``: the Transducer-Llama table of issue 11.

One run, the same test sets and decoding for every system, one row each:

=========================  =============================================================
HAT baseline               ``--hat``: a fit checkpoint (torch) or an exported bundle (ORT)
Factorized transducer      ``--factorized``: stage ``factorized`` checkpoint, weak LM (torch)
Transducer-Llama           ``--llama``: stage ``llama`` checkpoint; its Llama run by llama.cpp
Transducer-Llama + MWER    ``--mwer``: stage ``mwer`` checkpoint; llama.cpp LM
=========================  =============================================================

Columns: WER per test set (``--test NAME=MANIFEST``, e.g. the in-domain test set and the
held-out text source), decode RTF (model calls only, as ``edgeasr eval``), size (ASR graphs
fp32 + LM: the stateless LM's fp32 weights or the GGUF file), and the WER change relative to
the factorized transducer (the paper reports -17 % for Transducer-Llama + MWER). The Llama rows
run the checkpoint's own LM, exported to GGUF on the fly (``--gguf-type``), unless ``--gguf``
names a file; ``lm_weight`` is the checkpoint's unless ``--lm-weight`` overrides it. Any row
can be left out.

    python -m benchmarks.transducer_llama --test dev=DEV.jsonl --test ood=OOD.jsonl \\
        --hat exp/hat/epoch-9.pt --factorized exp/tl-a/step-N.pt --llama exp/tl-b/step-N.pt \\
        --mwer exp/tl-c/step-N.pt --decoding beam --beam 4 [--limit 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SYSTEMS", "format_table", "main", "measure"]

#: (option / key, row label), in table order.
SYSTEMS = (("hat", "HAT baseline"), ("factorized", "Factorized transducer"),
           ("llama", "Transducer-Llama"), ("mwer", "Transducer-Llama + MWER"))


@dataclass
class Row:
    """One system's measurements."""

    key: str
    label: str
    path: str
    backend: str
    lm: str
    asr_bytes: int
    lm_bytes: int
    wer: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    words: dict[str, int] = field(default_factory=dict)
    audio_s: float = 0.0
    decode_s: float = 0.0

    @property
    def rtf(self) -> float:
        return self.decode_s / self.audio_s if self.audio_s else float("nan")


def _params_bytes(state: dict[str, Any]) -> int:
    return sum(v.numel() * 4 for v in state.values() if v.is_floating_point())


def _is_bundle(path: Path) -> bool:
    return path.is_dir() or path.suffix in (".json", ".tar")


def _recognizer(key: str, path: Path, args: argparse.Namespace, tmp: Path):
    """``(Recognizer, backend name, LM description, ASR bytes, LM bytes)`` of one system."""
    from edgeasr.decoding import DecodingConfig
    from edgeasr.features import FeatureConfig
    from edgeasr.stream import Recognizer, RecognizerConfig
    from edgeasr.tokenizer import Tokenizer

    dec = DecodingConfig(method=args.decoding, beam_size=args.beam)
    if key == "hat":
        if _is_bundle(path):
            from benchmarks.run import bundle_sizes

            rec = Recognizer.from_bundle(path, decoding=dec, num_threads=args.threads,
                                         precision="fp32")
            size = next(r["total_bytes"] for r in bundle_sizes(path)
                        if (r["format"], r["precision"]) == ("onnx", "fp32"))
            return rec, "onnxruntime", "-", size, 0
        from edgeasr.train.checkpoint import load_for_inference

        rec = Recognizer.from_checkpoint(path, decoding=dec, num_threads=args.threads)
        return rec, "torch", "-", _params_bytes(load_for_inference(path)[0].state_dict()), 0

    from edgeasr.train.model.factorized import lm_record
    from edgeasr.train.transducer_llama import load_factorized

    from edgeasr.backends.torch import TorchBackend
    from edgeasr.backends.torch_lm import TorchLabelLM

    model, tok_bytes, configs = load_factorized(path)
    tok = Tokenizer.from_bytes(tok_bytes, str(path))
    dec.lm_weight = model.fcfg.lm_weight if args.lm_weight is None else args.lm_weight
    asr = _params_bytes({k: v for k, v in model.state_dict().items()
                         if not k.startswith("lm.")})
    kind = lm_record(model.lm)["kind"]
    if key == "factorized":
        lm: Any = TorchLabelLM(model.lm)
        lm_desc, lm_bytes = f"{kind} (torch)", _params_bytes(model.lm.state_dict())
    else:
        from edgeasr.decoding.llama_predictor import LlamaPredictor

        gguf = Path(args.gguf) if args.gguf else None
        if gguf is None:
            if kind != "llama":
                raise SystemExit(f"--{key} {path}: its LM is {kind}, not a Llama; pass the "
                                 "stage llama/mwer checkpoint (or --gguf)")
            from edgeasr.train.llama.gguf_export import export_gguf

            gguf = export_gguf(model.lm, tok, tmp / f"{key}.gguf", args.gguf_type)
        lm = LlamaPredictor(gguf, n_threads=args.threads)
        lm_desc, lm_bytes = f"llama.cpp {gguf.name}", gguf.stat().st_size
    rec = Recognizer(TorchBackend(model, num_threads=args.threads), tok,
                     FeatureConfig.from_dict(dict(configs["feature_config"])),
                     RecognizerConfig(decoding=dec), lm=lm)
    return rec, "torch", lm_desc, asr, lm_bytes


def measure(key: str, label: str, path: Path, tests: dict[str, list], args: argparse.Namespace,
            tmp: Path) -> Row:
    """Decode every test set with one system (each utterance as a stream)."""
    from edgeasr.commands.eval import decode_cut
    from edgeasr.metrics import wer

    rec, backend, lm_desc, asr_bytes, lm_bytes = _recognizer(key, path, args, tmp)
    row = Row(key, label, str(path), backend, lm_desc, asr_bytes, lm_bytes)
    first = next((c[0] for c in tests.values() if c), None)
    if first is not None:  # warm-up (lazy initialization, caches) outside the timing
        decode_cut(rec, first)
    for name, cuts in tests.items():
        refs, hyps = [], []
        for cut in cuts:
            r, audio_s, decode_s, _ = decode_cut(rec, cut)
            row.audio_s += audio_s
            row.decode_s += decode_s
            refs.append(cut.text)
            hyps.append(r.text)
        score = wer(refs, hyps)
        row.wer[name] = score.rate
        row.errors[name] = score.errors
        row.words[name] = score.ref_len
    return row


def format_table(rows: list[Row], tests: list[str]) -> str:
    """The markdown table (WER in %, relative change vs the factorized row)."""
    base = next((r for r in rows if r.key == "factorized"), None)
    head = ["system", *(f"WER {t} %" for t in tests), "rel. to factorized", "decode RTF",
            "size MB (ASR + LM)", "backend / LM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rel = []
        for t in tests:
            if base is None or base is r or not base.wer.get(t):
                continue
            rel.append(f"{100 * (r.wer[t] / base.wer[t] - 1):+.1f}% {t}")
        cells = [r.label, *(f"{100 * r.wer[t]:.2f}" for t in tests),
                 ", ".join(rel) or "-", f"{r.rtf:.4f}",
                 f"{(r.asr_bytes + r.lm_bytes) / 1e6:.2f} ({r.asr_bytes / 1e6:.2f} + "
                 f"{r.lm_bytes / 1e6:.2f})", f"{r.backend} / {r.lm}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse_tests(items: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--test {item!r}: expected NAME=MANIFEST.jsonl")
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transducer_llama",
                                description=__doc__.splitlines()[0])
    p.add_argument("--test", action="append", default=[], required=True,
                   metavar="NAME=MANIFEST", help="a test set (repeatable)")
    for key, label in SYSTEMS:
        p.add_argument(f"--{key}", type=Path, default=None, metavar="PATH", help=label)
    p.add_argument("--decoding", choices=("greedy", "beam"), default="beam")
    p.add_argument("--beam", type=int, default=4, metavar="K")
    p.add_argument("--lm-weight", type=float, default=None, metavar="W",
                   help="override the checkpoints' lm_weight (tuned on dev)")
    p.add_argument("--gguf", default=None, metavar="LM.gguf",
                   help="LM of the Llama rows (default: export the checkpoint's Llama)")
    p.add_argument("--gguf-type", choices=("f32", "q8_0"), default="q8_0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="first N utterances of each test set")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    from edgeasr.manifest import read_manifest

    tests = {}
    for name, path in _parse_tests(args.test).items():
        cuts = read_manifest(path)
        tests[name] = cuts[: args.limit] if args.limit else cuts
    chosen = [(k, label, getattr(args, k)) for k, label in SYSTEMS if getattr(args, k)]
    if not chosen:
        raise SystemExit("give at least one of --hat/--factorized/--llama/--mwer")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, label, path in chosen:
            print(f"decoding {label} ({path}) ...", file=sys.stderr, flush=True)
            rows.append(measure(key, label, path, tests, args, Path(tmp)))
    print(f"{sum(len(c) for c in tests.values())} utterances; decoding {args.decoding}"
          + (f" (beam {args.beam})" if args.decoding == "beam" else ""))
    print(format_table(rows, list(tests)))
    if args.json:
        args.json.write_text(json.dumps([{**r.__dict__, "rtf": r.rtf} for r in rows],
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
