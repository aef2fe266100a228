"""N-best lists of a factorized transducer and the MWER training objective built on them.

The N-best lists come from the runtime's own beam search
(:class:`~edgeasr.decoding.ModifiedBeamSearchDecoder` with factorized labels) run on the
in-memory model through the torch backend and a PyTorch LM predictor: one search
implementation, so the hypotheses MWER trains on are exactly those the deployed decoder ranks.
The encoder runs once per batch with the model's streaming chunk mask (equal to chunk-by-chunk
streaming), and each utterance's frames go to the search in one call (the decoders are chunk
invariant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from edgeasr.backends.torch import TorchBackend
from edgeasr.backends.torch_lm import TorchLabelLM
from edgeasr.decoding import FactorizedLabels, ModifiedBeamSearchDecoder
from edgeasr.metrics import align

from .model.factorized import FactorizedTransducer, mwer_loss
from .model.transducer import LossOutput

__all__ = ["MwerObjective", "decode_nbest", "word_errors"]


@torch.no_grad()
def decode_nbest(model: FactorizedTransducer, feats: Tensor, feat_lens: Tensor, beam: int
                 ) -> list[list[tuple[list[int], float]]]:
    """Beam search of every utterance: ``[n][k] = (tokens, log score)``, best first (at most
    ``beam`` distinct token sequences). The model is put in eval mode for the search and
    returned to its previous mode."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        # fp32 search even inside the trainer's bf16/fp16 autocast: the numpy backend
        # interface has no half types, and the ranking should not depend on the AMP setting
        with torch.autocast(device.type, enabled=False):
            e, e_lens = model.encoder(feats, feat_lens.to(device),
                                      chunk_size=model.cfg.chunk_size)
            labels = FactorizedLabels(TorchLabelLM(model.lm), model.fcfg.lm_weight)
            search = ModifiedBeamSearchDecoder(TorchBackend(model, device=str(device)),
                                               beam=beam, labels=labels)
            frames = e.float().cpu().numpy()
            out = []
            for n in range(frames.shape[0]):
                state = search.init_state()
                search.decode_chunk(np.ascontiguousarray(frames[n : n + 1, : int(e_lens[n])]),
                                    [state])
                search.finalize([state])
                out.append([(list(h.tokens), h.score) for h in state.hyps])
        return out
    finally:
        model.train(was_training)


def word_errors(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word edit distance (substitutions + insertions + deletions)."""
    return align(list(ref), list(hyp))[0].errors


class MwerObjective(nn.Module):
    """MWER fine-tuning as a module with the transducer's ``forward`` signature (so the
    training loop runs it like any model): N-best by beam search (no gradient), word errors
    against the reference, :func:`mwer_loss` over the differentiable sequence scores, plus
    ``rnnt_weight`` times the ordinary transducer loss (the usual interpolation that keeps the
    model a good likelihood model while the expected errors go down).

    ``words(token_ids) -> list[str]``: the normalized words of a token sequence (the trainer
    passes tokenizer decoding + :func:`~edgeasr.text.normalize_text`)."""

    def __init__(self, model: FactorizedTransducer, words: Callable[[Sequence[int]], list[str]],
                 beam: int = 4, rnnt_weight: float = 0.01) -> None:
        super().__init__()
        if beam < 2:
            raise ValueError(f"MWER needs N-best lists of >= 2 hypotheses, got beam={beam}")
        if rnnt_weight < 0:
            raise ValueError(f"rnnt_weight must be >= 0, got {rnnt_weight}")
        self.model = model
        self.words = words
        self.beam = beam
        self.rnnt_weight = rnnt_weight

    def forward(self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor
                ) -> LossOutput:
        nbest = decode_nbest(self.model, feats, feat_lens, self.beam)
        hyps = [[tokens for tokens, _ in utt] for utt in nbest]
        k = max(len(h) for h in hyps)
        errors = torch.zeros(len(hyps), k, device=feats.device)
        for n, utt in enumerate(hyps):
            ref = self.words(targets[n, : int(target_lens[n])].tolist())
            for j, tokens in enumerate(utt):
                errors[n, j] = word_errors(ref, self.words(tokens))
        scores = self.model.sequence_log_probs(feats, feat_lens, hyps,
                                               chunk_size=self.model.cfg.chunk_size)
        loss = mwer_loss(scores, errors)
        expected = (torch.softmax(scores.detach(), dim=1) * errors).sum(1).mean()
        parts = {"mwer": loss.detach(), "expected_errors": expected,
                 "oracle_errors": errors.masked_fill(~torch.isfinite(scores), float("inf"))
                 .min(1).values.mean()}
        if self.rnnt_weight > 0:
            rnnt = self.model(feats, feat_lens, targets, target_lens).loss
            parts["rnnt"] = rnnt.detach()
            loss = loss + self.rnnt_weight * rnnt
        return LossOutput(loss=loss, parts=parts)
