"""``edgeasr-train``: the training-side command line, a registry of lazily imported commands.

To add a command, add ``"name": "edgeasr.train.<module>"`` to :data:`COMMANDS`; the module
defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.  A module is
imported only when its command is parsed or run, so ``--help`` stays fast and a broken or heavy
module (torch) does not slow down or break the other commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from edgeasr.errors import EdgeAsrError

COMMANDS: dict[str, str] = {
    "corpus": "edgeasr.train.corpus.cli",
    "fit": "edgeasr.train.fit",
    "average": "edgeasr.train.average_cmd",
    "tokenizer": "edgeasr.train.tokenizer_cmd",
    "holdout": "edgeasr.train.holdout_cmd",
    "lm": "edgeasr.train.llama.train_lm",
    "lm-adapt": "edgeasr.train.llama.vocab_adapt",
    "lm-gguf": "edgeasr.train.llama.gguf_export",
    "transducer-llama": "edgeasr.train.transducer_llama",
    "parallel": "edgeasr.train.corpus.parallel",
    "st": "edgeasr.train.st",
    "mlm": "edgeasr.train.bert.train_mlm",
}


def _load(name: str) -> ModuleType:
    module = importlib.import_module(COMMANDS[name])
    for attr in ("add_arguments", "run"):
        if not callable(getattr(module, attr, None)):
            raise TypeError(f"command module {COMMANDS[name]} lacks {attr}()")
    return module


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """Top-level parser; only the command named in ``argv`` (if any) is imported."""
    parser = argparse.ArgumentParser(prog="edgeasr-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    loaded: dict[str, ModuleType] = {}
    for name in COMMANDS:
        if name == chosen:
            loaded[name] = _load(name)
            p = sub.add_parser(name, help=getattr(loaded[name], "HELP", None))
            loaded[name].add_arguments(p)
        else:
            sub.add_parser(name, help=f"(run 'edgeasr-train {name} --help')", add_help=False)
    return parser, loaded


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, loaded = build_parser(argv)
    args = parser.parse_args(argv)
    module = loaded.get(args.command) or _load(args.command)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("edgeasr-train: interrupted", file=sys.stderr)
        return 130
    except (EdgeAsrError, OSError) as e:
        # A user's mistake (bad config, missing file, broken checkpoint): one clear line.
        print(f"edgeasr-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
