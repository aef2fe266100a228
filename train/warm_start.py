"""Start a model from another run's weights when only training settings differ.

Why: a checkpoint's weights fit any model of the same network shape, whatever chunk sizes,
predictor masking, loss scales or SpecAugment it was trained with. ``fit --init`` (continue the
shipped model with a new schedule or lighter regularization) and HENT-SRT stage 2 (the ASR half
starts from a stage-1 ASR model) both need that, so the rule lives here once. An exact
``--resume`` still demands the identical config (see ``fit._require_model_config``).
"""

from __future__ import annotations

from typing import Any

import torch

from edgeasr.features import FeatureConfig

from .config import ConfigError
from .model import Transducer

__all__ = ["WEIGHT_FIELDS", "require_same_features", "require_same_network",
           "warm_start_state"]

#: ModelConfig fields that shape the weights: a warm-start checkpoint must agree on all.
WEIGHT_FIELDS = ("vocab_size", "feature_dim", "subsampling", "subsampling_channels", "d_model",
                 "num_layers", "num_heads", "ffn_dim", "conv_kernel", "joint_dim",
                 "predictor_dim", "context_size")


def warm_start_state(init: dict[str, Any], model: Transducer, what: str
                     ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights of checkpoint ``init`` as a full state dict for ``model``, and notes.

    ``init`` must have the same network shape (:data:`WEIGHT_FIELDS`, and the same TDT
    durations when ``model`` has a duration head); training-only settings (chunk sizes, masking,
    loss scales, SpecAugment, left context) may differ and are listed in the notes. Two heads
    are reconciled, each reported in the notes:

    - a TDT duration head is dropped when ``model`` is a plain RNN-T (HENT-SRT decodes its ASR
      head frame by frame; the blank and label heads are the TDT model's own);
    - the pruned loss's ``simple_am_proj`` / ``simple_lm_proj`` (used only by that training loss)
      start from ``model``'s fresh initialization when ``init`` trained with the full loss, and
      are dropped in the opposite case.
    """
    notes = require_same_network(init, model.cfg.to_dict(), what)
    src, dst = init["model_config"], model.cfg.to_dict()
    src_d, dst_d = tuple(src.get("durations") or ()), tuple(dst["durations"] or ())
    state = dict(init["model"])
    if src_d and not dst_d:
        for k in [k for k in state if k.startswith("joint.duration_head.")]:
            del state[k]
        notes.append(f"TDT duration head (durations {list(src_d)}) dropped: RNN-T head")
    own = model.state_dict()
    fresh = [k for k in own if k.startswith(("simple_am_proj.", "simple_lm_proj."))]
    if fresh and not any(k in state for k in fresh):
        state.update({k: own[k] for k in fresh})
        notes.append("pruned-loss projections (simple_am/lm_proj) freshly initialized")
    extra = [k for k in state if k.startswith(("simple_am_proj.", "simple_lm_proj."))
             and k not in own]
    for k in extra:
        del state[k]
    if extra:
        notes.append("pruned-loss projections of the init checkpoint dropped (full loss here)")
    return state, notes


def require_same_network(init: dict[str, Any], dst: dict[str, Any], what: str) -> list[str]:
    """Refuse checkpoint ``init`` unless its network shape (:data:`WEIGHT_FIELDS`, and the TDT
    durations when ``dst``, a ``ModelConfig`` dict, has a duration head) is ``dst``'s; return a
    note naming the training-only settings that differ (empty when none do)."""
    src = init.get("model_config") or {}
    bad = [f"{k} {src.get(k)!r} != {dst[k]!r}" for k in WEIGHT_FIELDS if src.get(k) != dst[k]]
    src_d, dst_d = tuple(src.get("durations") or ()), tuple(dst.get("durations") or ())
    if dst_d and src_d != dst_d:
        bad.append(f"durations {list(src_d)} != {list(dst_d)}")
    if bad:
        raise ConfigError(f"{what}: its network differs from [model] ({'; '.join(bad)});"
                          " copy its [model] shape into the config")
    changed = sorted(k for k in dst if k not in WEIGHT_FIELDS and k != "durations"
                     and src.get(k) != dst[k])
    if not changed:
        return []
    return ["training settings changed from the init checkpoint: " + ", ".join(changed)]


def require_same_features(init: dict[str, Any], features: FeatureConfig, what: str) -> None:
    """The init checkpoint's weights (and its CMVN, which the new run keeps) expect the
    features they were trained on."""
    if FeatureConfig.from_dict(init.get("feature_config") or {}) != features:
        raise ConfigError(f"{what}: its feature config differs from [features]; a warm start "
                          "must extract the features its checkpoint was trained on")
