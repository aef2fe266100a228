"""Stateless predictor (icefall ``decoder.py``): the label context is just the last
``context_size`` tokens, so decoding state is a small int array and the predictor is a pure
function that batches and exports trivially.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .config import BLANK_ID


class Predictor(nn.Module):
    """Embedding -> grouped Conv1d over the last ``context_size`` tokens -> ReLU -> Linear(J).

    The blank id pads the start of every label sequence (its embedding is fixed at zero via
    ``padding_idx``, as in icefall), so ``step([[0, 0]])`` is the start-of-utterance output.
    """

    def __init__(
        self, vocab_size: int, dim: int, joint_dim: int, context_size: int = 2
    ) -> None:
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size must be >= 1, got {context_size}")
        self.vocab_size = vocab_size
        self.context_size = context_size
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=BLANK_ID)
        # icefall: groups = dim // 4 keeps the context mixing cheap (4 channels per group).
        groups = dim // 4 if dim % 4 == 0 and dim >= 4 else 1
        self.conv = (
            nn.Conv1d(dim, dim, kernel_size=context_size, groups=groups, bias=False)
            if context_size > 1 else None
        )
        self.proj = nn.Linear(dim, joint_dim)

    def forward(self, tokens: Tensor, need_pad: bool = True) -> Tensor:
        """``tokens [N, U+1]`` (blank-prefixed labels; ``need_pad`` left-pads with blanks so
        output ``u`` sees tokens ``u-context_size+1 .. u``) or ``[N, context_size]`` with
        ``need_pad=False`` (output length 1). Returns ``[N, U', J]``."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [N, U], got {tuple(tokens.shape)}")
        if not need_pad and tokens.shape[1] < self.context_size:
            raise ValueError(
                f"without padding tokens need >= context_size={self.context_size} columns, "
                f"got {tokens.shape[1]}"
            )
        emb = self.embedding(tokens.clamp_min(0)).transpose(1, 2)  # [N, dim, U]
        if self.conv is not None:
            if need_pad:
                emb = F.pad(emb, (self.context_size - 1, 0))
            emb = self.conv(emb)
        return self.proj(F.relu(emb.transpose(1, 2)))

    def step(self, context: Tensor) -> Tensor:
        """Decoding step: ``context [N, context_size]`` (last tokens, oldest first) ->
        ``[N, J]``."""
        if context.dim() != 2 or context.shape[1] != self.context_size:
            raise ValueError(
                f"context must be [N, {self.context_size}], got {tuple(context.shape)}"
            )
        return self.forward(context, need_pad=False)[:, -1]
