"""Measurement primitives: latency percentiles, timing proxies around the backend and decoder,
RSS sampling, and the machine/version record every result carries.

Why proxies: the benchmark must measure the runtime exactly as users run it, without editing
the runtime. :class:`TimedBackend` implements the backend interface by forwarding every graph
call and recording its wall time, so a :class:`~edgeasr.stream.Recognizer` built on it (decoder
included, since the decoder holds the backend it was built with) reports encoder and decoder
time apart. :class:`TimedDecoder` wraps the decoder to time whole ``decode_chunk`` calls (graph
calls plus the decoder's own Python work).
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

__all__ = [
    "RssSampler",
    "TimedBackend",
    "TimedDecoder",
    "current_rss_mb",
    "load_average",
    "machine_info",
    "peak_rss_mb",
    "percentiles",
    "versions",
]

GRAPH_CALLS = ("encoder", "predictor", "joint_blank", "joint_labels", "iam_joint")


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | int]:
    """p50/p95/p99/mean/max of ``values`` (seconds) in milliseconds (``scale``), plus ``n``.

    Empty input gives ``{"n": 0}`` so a report can say "no calls" instead of inventing zeros.
    """
    if len(values) == 0:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64) * scale
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size),
        "p50": round(float(p50), 4),
        "p95": round(float(p95), 4),
        "p99": round(float(p99), 4),
        "mean": round(float(a.mean()), 4),
        "max": round(float(a.max()), 4),
    }


class TimedBackend:
    """A backend that forwards to ``inner`` and records each graph call's wall time.

    ``calls[name]`` is the list of durations (s) of every call of graph ``name``. ``mark()`` /
    ``since(mark)`` give the time spent in a graph between two points, which is how the harness
    splits one decode round into encoder and decoder-graph time.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.totals: dict[str, float] = defaultdict(float)

    def _timed(self, name: str, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = getattr(self.inner, name)(*args)
        dt = time.perf_counter() - t0
        self.calls[name].append(dt)
        self.totals[name] += dt
        return out

    def init_caches(self, batch: int) -> Any:
        return self.inner.init_caches(batch)

    def encoder(self, features: np.ndarray, caches: Any) -> Any:
        return self._timed("encoder", features, caches)

    def predictor(self, context: np.ndarray) -> Any:
        return self._timed("predictor", context)

    def joint_blank(self, e: np.ndarray, p: np.ndarray) -> Any:
        return self._timed("joint_blank", e, p)

    def joint_labels(self, h: np.ndarray) -> Any:
        return self._timed("joint_labels", h)

    def iam_joint(self, frames: np.ndarray) -> Any:
        return self._timed("iam_joint", frames)

    def reset(self) -> None:
        self.calls.clear()
        self.totals.clear()

    def decoder_graph_total(self) -> float:
        """Seconds spent in every graph except the encoder (the decoder's share of graph time)."""
        return sum(v for k, v in self.totals.items() if k != "encoder")


class TimedDecoder:
    """Forwards to a decoder and records the wall time of each ``decode_chunk`` / ``finalize``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.chunk_times: list[float] = []
        self.finalize_times: list[float] = []

    def __getattr__(self, name: str) -> Any:  # init_state, best, new_segment, ...
        return getattr(self.inner, name)

    def decode_chunk(self, frames: np.ndarray, states: list) -> None:
        t0 = time.perf_counter()
        self.inner.decode_chunk(frames, states)
        self.chunk_times.append(time.perf_counter() - t0)

    def finalize(self, states: list) -> None:
        t0 = time.perf_counter()
        self.inner.finalize(states)
        self.finalize_times.append(time.perf_counter() - t0)

    def reset(self) -> None:
        self.chunk_times.clear()
        self.finalize_times.clear()


def current_rss_mb() -> float:
    """Resident set size of this process now (MiB), from /proc (Linux) or psutil."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process since it started (MiB): ``ru_maxrss`` is KiB on Linux."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


class RssSampler:
    """Samples RSS every ``interval`` s in a daemon thread; ``with RssSampler() as s: ...``.

    The process-wide ``ru_maxrss`` never goes down, so after the model is loaded it cannot show
    how much one phase (a 10-minute stream, 32 streams) adds; sampling gives the peak *within*
    the phase and the growth from its start.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def __enter__(self) -> RssSampler:
        self._t0 = time.perf_counter()
        self.samples = [(0.0, current_rss_mb())]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter() - self._t0, current_rss_mb()))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append((time.perf_counter() - self._t0, current_rss_mb()))

    @property
    def start_mb(self) -> float:
        return self.samples[0][1]

    @property
    def peak_mb(self) -> float:
        return max(v for _, v in self.samples)

    @property
    def end_mb(self) -> float:
        return self.samples[-1][1]


def load_average() -> list[float]:
    """1/5/15-minute load averages: the context every timing needs on a shared machine."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores (and those this process may use), memory, OS, CUDA presence."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        usable = os.cpu_count() or 1
    mem_gb = None
    with contextlib.suppress(ValueError, OSError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "cuda": cuda_info(),
    }


def cuda_info() -> dict[str, Any]:
    """Whether torch sees CUDA and whether onnxruntime has its CUDA provider (no import of
    torch unless it is installed; the ORT path never needs it)."""
    info: dict[str, Any] = {"torch_cuda": False, "ort_cuda": False}
    try:
        import onnxruntime as ort

        info["ort_cuda"] = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        pass
    if _installed("torch"):
        import torch

        info["torch_cuda"] = bool(torch.cuda.is_available())
        if info["torch_cuda"]:
            info["device"] = torch.cuda.get_device_name(0)
    return info


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def versions() -> dict[str, str | None]:
    """Versions of everything whose speed we measure (``None``: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("edgeasr", "numpy", "onnxruntime", "torch", "executorch", "sherpa-onnx",
                 "pocketsphinx", "kaldi-native-fbank", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def thread_settings() -> dict[str, Any]:
    """Environment knobs that change thread counts behind our back."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")
    return {k: os.environ.get(k) for k in keys}
