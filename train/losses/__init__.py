"""Training losses for edgeasr, in pure vectorized PyTorch (no external loss library).

Token ids follow docs/architecture.md (blank = 0). All losses take batch-first tensors, integer
``logit_lengths``/``target_lengths``, validate their inputs, and use the same reductions:
"mean" = batch mean of per-utterance negative log-likelihood, "sum", "none" (``[B]``).
"""

from .ctc import ctc_loss
from .pruned import do_rnnt_pruning, get_rnnt_prune_ranges, rnnt_loss_pruned, rnnt_loss_simple
from .rnnt import rnnt_loss
from .tdt import tdt_loss

__all__ = [
    "ctc_loss",
    "do_rnnt_pruning",
    "get_rnnt_prune_ranges",
    "rnnt_loss",
    "rnnt_loss_pruned",
    "rnnt_loss_simple",
    "tdt_loss",
]
