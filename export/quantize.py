"""int8 ONNX graphs by ONNX Runtime dynamic quantization (per-channel weights).

Why dynamic rather than static QDQ: the streaming encoder's activations (attention caches that
grow from zeros, LayerNorm outputs) have ranges that shift from chunk to chunk, and dynamic
quantization computes activation scales per call, so no calibration set can be wrong; the weights,
which are >95 % of the bytes, are int8 per output channel either way. Only ``MatMul``/``Gemm``
are quantized: they carry the weights, and ORT's int8 ``ConvInteger`` on CPU is slower than fp32
for the tiny depthwise/subsampling convolutions. ``per_channel`` keeps the error small for
layers whose rows differ in scale (the joint heads, the output projection).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgeasr.export.onnx import add_metadata
from onnxruntime.quantization import QuantType, quantize_dynamic

__all__ = ["quantize_onnx_int8"]


def quantize_onnx_int8(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], per_channel: bool = True
) -> Path:
    """Write an int8-weight copy of ``src`` to ``dst``; ONNX metadata is carried over."""
    import onnx

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # onnxruntime.quantization logs every skipped node at INFO/WARNING; keep the CLI readable.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            src,
            dst,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    finally:
        logger.setLevel(level)
    metadata = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    if metadata:
        add_metadata(dst, metadata)
    return dst
