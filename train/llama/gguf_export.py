"""Export the small Llama (on the ASR vocabulary) to GGUF for llama.cpp / llama-cpp-python.

The file uses llama.cpp's ``llama`` architecture unchanged, so any llama.cpp build runs it:

* tensors ``token_embd``, ``blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
  ffn_gate, ffn_up, ffn_down}``, ``output_norm`` and ``output`` (left out when the embeddings
  are tied: llama.cpp then reuses ``token_embd``);
* rotary: our model rotates the two *halves* of each head (Hugging Face layout), llama.cpp's
  ``llama`` rope (type NORM) rotates *adjacent pairs* (Meta layout). The rows of ``wq`` / ``wk``
  are permuted exactly as ``convert_hf_to_gguf.py``'s ``LlamaModel.permute`` does, which makes
  the two equivalent (q.k products are unchanged by a common permutation of q and k);
* tokenizer: the ASR sentencepiece vocabulary as an SPM (``llama``) tokenizer with its scores;
  id 0 (blank, used as BOS) is a CONTROL token, id 1 ``<unk>`` UNKNOWN, the rest NORMAL. No
  BOS is added automatically: callers feed ids, starting with 0.

``q8_0`` quantizes every matrix with gguf-py's reference quantizer (32-value blocks, one fp16
scale each: the byte layout llama.cpp reads); norms stay fp32. So widths must be multiples of 32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import sentencepiece as spm

from edgeasr.tokenizer import BLANK_ID, UNK_ID, Tokenizer

from .model import Llama
from .train_lm import load_lm

__all__ = ["OUT_TYPES", "add_arguments", "export_gguf", "permute_rotary", "run"]

HELP = "export a Llama LM checkpoint (on the ASR vocabulary) to GGUF (fp32 or q8_0)"
OUT_TYPES = ("f32", "q8_0")


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a ``[n_heads * head_dim, in]`` q/k weight from rotate-half to interleaved order
    (convert_hf_to_gguf.py ``permute``): in each head, row ``i`` of the first half goes to
    ``2i`` and row ``i`` of the second half to ``2i + 1``."""
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _tensors(model: Llama) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, fp32 array) in llama.cpp's naming; ``[out, in]`` like PyTorch (gguf stores
    the reversed shape, which is llama.cpp's ``ne`` order)."""
    cfg = model.cfg
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    out = [("token_embd.weight", sd["tok_embeddings.weight"])]
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        out += [
            (f"blk.{i}.attn_norm.weight", sd[p + "attention_norm.weight"]),
            (f"blk.{i}.attn_q.weight", permute_rotary(sd[p + "attention.wq.weight"],
                                                      cfg.n_heads)),
            (f"blk.{i}.attn_k.weight", permute_rotary(sd[p + "attention.wk.weight"],
                                                      cfg.n_heads)),
            (f"blk.{i}.attn_v.weight", sd[p + "attention.wv.weight"]),
            (f"blk.{i}.attn_output.weight", sd[p + "attention.wo.weight"]),
            (f"blk.{i}.ffn_norm.weight", sd[p + "ffn_norm.weight"]),
            (f"blk.{i}.ffn_gate.weight", sd[p + "feed_forward.w1.weight"]),
            (f"blk.{i}.ffn_up.weight", sd[p + "feed_forward.w3.weight"]),
            (f"blk.{i}.ffn_down.weight", sd[p + "feed_forward.w2.weight"]),
        ]
    out.append(("output_norm.weight", sd["norm.weight"]))
    if not cfg.tie_embeddings:
        out.append(("output.weight", sd["output.weight"]))
    return out


def export_gguf(model: Llama, tokenizer: Tokenizer, path: str | Path, out_type: str = "f32",
                name: str = "edgeasr-llama") -> Path:
    """Write ``model`` with ``tokenizer``'s vocabulary to ``path``; returns the path."""
    import gguf  # training-side dependency only

    cfg = model.cfg
    if out_type not in OUT_TYPES:
        raise ValueError(f"out_type must be one of {OUT_TYPES}, got {out_type!r}")
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but the model "
                         f"{cfg.vocab_size} rows: export the vocabulary-adapted LM")
    q8 = out_type == "q8_0"
    if q8 and (cfg.dim % 32 or cfg.hidden_dim % 32):
        raise ValueError(f"q8_0 needs dim and hidden_dim divisible by 32, got {cfg.dim} and "
                         f"{cfg.hidden_dim}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), arch="llama")
    w.add_name(name)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(tokenizer.model_bytes)
    types = [gguf.TokenType.CONTROL if i == BLANK_ID else
             gguf.TokenType.UNKNOWN if i == UNK_ID else gguf.TokenType.NORMAL
             for i in range(cfg.vocab_size)]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([p.encode("utf-8") for p in tokenizer.pieces()])
    w.add_token_scores([float(sp.GetScore(i)) for i in range(cfg.vocab_size)])
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(BLANK_ID)
    w.add_eos_token_id(BLANK_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)

    for tname, arr in _tensors(model):
        if q8 and arr.ndim == 2:
            w.add_tensor(tname, gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(tname, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="LM checkpoint on the ASR vocabulary "
                   "(edgeasr-train lm-adapt ... /adapted/lm.pt)")
    p.add_argument("--out", type=Path, required=True, help="output .gguf file")
    p.add_argument("--type", choices=OUT_TYPES, default="f32")


def run(args: argparse.Namespace) -> int:
    model, tok, _ = load_lm(args.checkpoint)
    out = export_gguf(model, tok, args.out, args.type)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {args.type})")
    return 0
