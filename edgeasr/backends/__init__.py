"""Model backends: the same graph calls (:class:`~edgeasr.backends.base.Backend`) on ONNX
Runtime, ExecuTorch or PyTorch. Submodules import their runtime only when used, so importing
this package never pulls in torch."""

from edgeasr.backends.base import (
    Backend,
    BackendError,
    BackendSpec,
    Caches,
    CacheSpec,
    RecognizerError,
    split_caches,
    stack_caches,
)

__all__ = [
    "Backend",
    "BackendError",
    "CacheSpec",
    "Caches",
    "BackendSpec",
    "RecognizerError",
    "split_caches",
    "stack_caches",
]
