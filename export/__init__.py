"""Export side of edgeasr: ONNX, ExecuTorch and sherpa-onnx graphs in a self-describing bundle.

Entry points: :func:`edgeasr.export.writer.export_checkpoint` and the ``edgeasr-export`` CLI.
"""
