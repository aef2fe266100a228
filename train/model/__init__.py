"""The transducer model definition shared by training, export and the torch runtime backend.

See docs/architecture.md for the contract (token ids, frame arithmetic, cache layout, joint).
"""

from .config import (
    BLANK_ID,
    PAD_LENGTH,
    ModelConfig,
    SpecAugmentConfig,
    default_config,
    tiny_config,
)
from .encoder import (
    CACHE_NAMES,
    Encoder,
    EncoderCaches,
    StreamingEncoder,
    chunk_attention_mask,
    sample_chunk_size,
)
from .joint import Joint, JointOutput, hat_log_probs
from .predictor import Predictor
from .specaugment import SpecAugment
from .subsampling import Conv2dSubsampling, GlobalCMVN
from .transducer import LossOutput, Transducer, count_parameters, greedy_decode

__all__ = [
    "BLANK_ID",
    "CACHE_NAMES",
    "PAD_LENGTH",
    "Conv2dSubsampling",
    "Encoder",
    "EncoderCaches",
    "GlobalCMVN",
    "Joint",
    "JointOutput",
    "LossOutput",
    "ModelConfig",
    "Predictor",
    "SpecAugment",
    "SpecAugmentConfig",
    "StreamingEncoder",
    "Transducer",
    "chunk_attention_mask",
    "count_parameters",
    "default_config",
    "greedy_decode",
    "hat_log_probs",
    "sample_chunk_size",
    "tiny_config",
]
