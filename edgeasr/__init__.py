"""edgeasr: on-device streaming speech recognition (runtime package).

The runtime imports no torch. Training lives in :mod:`edgeasr.train`, export in
:mod:`edgeasr.export`, applications in :mod:`edgeasr.apps`.
"""

__version__ = "0.1.0"

# The streaming API, imported on first use so that ``import edgeasr`` (and ``edgeasr --version``)
# stays instant and pulls in neither onnxruntime nor numpy-heavy modules until needed.
_LAZY = {
    "Recognizer": "edgeasr.stream",
    "RecognizerConfig": "edgeasr.stream",
    "RecognizerError": "edgeasr.stream",
    "Result": "edgeasr.stream",
    "Stream": "edgeasr.stream",
    "StreamError": "edgeasr.stream",
    "DecodingConfig": "edgeasr.decoding",
    "EndpointConfig": "edgeasr.endpoint",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeasr' has no attribute {name!r}")
