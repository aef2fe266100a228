"""Vocabulary adaptation (Transducer-Llama, Sec. "vocabulary adaptation"): move an LM trained
with its own large vocabulary onto the small ASR sentencepiece vocabulary.

Why: the transducer's label distribution is over the ASR vocabulary (a few hundred pieces), and
an LM that predicts a different, larger vocabulary would need a costly re-tokenization between
the two at every decoding step. Instead the LM's body is kept and only its embedding and output
layers are rebuilt for the ASR pieces:

* each ASR piece is segmented into the *fewest* LLM pieces whose concatenation is exactly the
  ASR piece string (``▁`` included, so word-initial and word-internal pieces stay distinct);
  usually that is one LLM piece, since BPE vocabularies nest;
* the new embedding row (and output row, when untied) is the mean of those LLM rows;
* blank (id 0, the BOS of both models) and ``<unk>`` (id 1) copy their LLM rows.

Then the adapted LM is fine-tuned briefly on ASR-tokenized text. ``edgeasr-train lm-adapt
--runs adapted,direct`` also trains the same architecture from scratch on the ASR vocabulary
for the same number of steps: the baseline the adaptation has to beat.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgeasr.tokenizer import BLANK_ID, UNK_ID, Tokenizer

from .model import Llama, LlamaConfig
from .train_lm import LMTrainConfig, encode_sentences, evaluate, load_lm, save_lm, train_lm

__all__ = ["adapt_vocabulary", "add_arguments", "run", "segment_piece"]

HELP = "adapt a trained Llama LM to the ASR vocabulary (and compare with direct training)"


def segment_piece(piece: str, vocab: dict[str, int]) -> list[int] | None:
    """Fewest ids of ``vocab`` (piece -> id) whose pieces concatenate to ``piece``; None if no
    segmentation exists. Dynamic programming over end positions (pieces are short)."""
    n = len(piece)
    best: list[list[int] | None] = [[]] + [None] * n
    for end in range(1, n + 1):
        for start in range(end):
            prefix = best[start]
            tid = vocab.get(piece[start:end])
            if prefix is not None and tid is not None and (
                    best[end] is None or len(prefix) + 1 < len(best[end])):  # type: ignore[arg-type]
                best[end] = prefix + [tid]
    return best[n]


@torch.no_grad()
def adapt_vocabulary(llm: Llama, llm_tok: Tokenizer, asr_tok: Tokenizer
                     ) -> tuple[Llama, dict[str, int]]:
    """A copy of ``llm`` whose embedding/output rows are indexed by the ASR vocabulary.

    Returns ``(model, stats)``; ``stats`` counts ASR pieces found whole in the LLM vocabulary
    (``exact``), composed of several LLM pieces (``composed``) and with no segmentation at all
    (``unk``: they get the LLM's ``<unk>`` rows)."""
    if llm.cfg.vocab_size != llm_tok.vocab_size:
        raise ValueError(f"LLM has {llm.cfg.vocab_size} rows but its tokenizer "
                         f"{llm_tok.vocab_size} pieces")
    cfg = LlamaConfig.from_dict({**llm.cfg.to_dict(), "vocab_size": asr_tok.vocab_size})
    model = Llama(cfg)
    body = {k: v for k, v in llm.state_dict().items()
            if not k.startswith(("tok_embeddings.", "output."))}
    model.load_state_dict(body, strict=False)
    llm_vocab = {p: i for i, p in enumerate(llm_tok.pieces()) if i not in (BLANK_ID, UNK_ID)}
    stats = {"exact": 0, "composed": 0, "unk": 0}
    src_emb, src_out = llm.tok_embeddings.weight, llm.output.weight
    for i, piece in enumerate(asr_tok.pieces()):
        if i in (BLANK_ID, UNK_ID):
            ids = [i]
        else:
            ids = segment_piece(piece, llm_vocab) or [UNK_ID]
            key = "unk" if ids == [UNK_ID] else "exact" if len(ids) == 1 else "composed"
            stats[key] += 1
        model.tok_embeddings.weight[i] = src_emb[ids].mean(0)
        if not cfg.tie_embeddings:
            model.output.weight[i] = src_out[ids].mean(0)
    return model, stats


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", type=Path, required=True, help="LLM checkpoint (edgeasr-train lm)")
    p.add_argument("--asr-tokenizer", type=Path, required=True, help="ASR sentencepiece model")
    p.add_argument("--text-dir", type=Path, required=True, help="folder with train/dev.txt")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-minutes", type=float, default=0.0, help="per run; 0 = no limit")
    p.add_argument("--runs", default="adapted,direct",
                   help="comma list of runs: 'adapted' (vocabulary-adapted LLM, fine-tuned) "
                        "and/or 'direct' (same architecture trained from scratch on the ASR "
                        "vocabulary, the baseline); separate processes can share --out")
    p.add_argument("--threads", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    llm, llm_tok, llm_state = load_lm(args.llm)
    asr_tok = Tokenizer(args.asr_tokenizer)
    texts = {s: (args.text_dir / f"{s}.txt").read_text(encoding="utf-8").splitlines()
             for s in ("train", "dev")}
    max_len = llm.cfg.max_seq_len - 1
    train = encode_sentences(asr_tok, texts["train"], max_len)
    dev = encode_sentences(asr_tok, texts["dev"], max_len)
    cfg = LMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        warmup=min(50, args.steps // 10), eval_every=args.steps,
                        max_minutes=args.max_minutes)
    names = [r for r in args.runs.split(",") if r]
    if not names or set(names) - {"adapted", "direct"}:
        raise SystemExit(f"--runs must list 'adapted' and/or 'direct', got {args.runs!r}")
    for name in names:
        if name == "adapted":
            model, stats = adapt_vocabulary(llm, llm_tok, asr_tok)
        else:
            model, stats = Llama(LlamaConfig.from_dict(
                {**llm.cfg.to_dict(), "vocab_size": asr_tok.vocab_size})), {}
        before = evaluate(model, dev)
        t0 = time.monotonic()
        steps, ppl = train_lm(model, train, dev, cfg)
        save_lm(args.out / name / "lm.pt", model, asr_tok, step=steps, dev_ppl=ppl)
        report = {"run": name, "asr_vocab": asr_tok.vocab_size,
                  "llm_vocab": llm_tok.vocab_size, "llm_step": llm_state.get("step"),
                  "pieces": stats, "dev_ppl_before": round(before, 3),
                  "dev_ppl": round(ppl, 3), "steps": steps, "batch_size": cfg.batch_size,
                  "minutes": round((time.monotonic() - t0) / 60, 2)}
        (args.out / name / "report.json").write_text(json.dumps(report, indent=2) + "\n",
                                                      "utf-8")
        print(json.dumps(report), flush=True)
    return 0
