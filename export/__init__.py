"""Export side of edgeasr: ONNX, ExecuTorch and sherpa-onnx artifacts in a self-describing bundle."""
