"""Transducer-Llama language-model side: the small Llama, its training, vocabulary adaptation
to the ASR tokenizer and GGUF export for llama.cpp (docs/transducer-llama.md)."""
