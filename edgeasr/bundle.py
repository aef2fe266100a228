"""The model bundle: a folder (or one ``.tar``) of exported graphs plus ``model.json``.

``model.json`` is the only thing a runtime needs to read to drive the graphs: the feature
definition, the chunk geometry, the cache tensors (names, shapes, dtypes, in graph input order),
every graph per format and precision with its input/output names, the tokenizer, decoding
defaults, and the sha256/size of every file. Export (:mod:`edgeasr.export.writer`) writes it,
the runtime loads it here. This module never imports torch: it is on the ONNX Runtime path.

The schema is versioned by an integer. A loader that meets a version it does not know refuses
with :class:`BundleError` instead of guessing, because a misread chunk size or cache layout
decodes garbage without failing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

from edgeasr.errors import EdgeAsrError
from edgeasr.features import FeatureConfig

__all__ = [
    "SCHEMA_VERSION",
    "MODEL_JSON",
    "FORMATS",
    "PRECISIONS",
    "BundleError",
    "TensorSpec",
    "GraphSpec",
    "ModelSpec",
    "ChunkProfile",
    "TokenizerSpec",
    "DecodingDefaults",
    "FileEntry",
    "Manifest",
    "Bundle",
    "file_entry",
    "sha256_file",
    "pack_bundle",
]

#: The schema version this code writes and the only one it reads.
SCHEMA_VERSION = 1
MODEL_JSON = "model.json"
#: Known graph formats: our split graphs for onnxruntime / executorch, and the sherpa-onnx flavor.
FORMATS = ("onnx", "executorch", "sherpa")
PRECISIONS = ("fp32", "int8")
DTYPES = ("float32", "int64", "int32")
#: Graph names of the edgeasr backend interface (docs/architecture.md, "Exported graphs").
EDGEASR_GRAPHS = ("encoder", "predictor", "joint_blank", "joint_labels", "iam_joint")
#: Graph names of the sherpa-onnx transducer flavor.
SHERPA_GRAPHS = ("encoder", "decoder", "joiner")


class BundleError(EdgeAsrError, ValueError):
    """A bundle that cannot be used: the message names the file and the problem."""


# --------------------------------------------------------------------------------------------
# Small helpers for strict (de)serialization: an unknown key is an error, since a typo in a
# hand-edited model.json would otherwise silently fall back to a default.


def _is_missing(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def _strict(cls: type, d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise BundleError(f"{where}: expected an object, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise BundleError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    missing = sorted(f.name for f in fields(cls) if _is_missing(f) and f.name not in d)
    if missing:
        raise BundleError(f"{where}: missing key(s) {missing}")
    return dict(d)


def _check_rel_path(p: Any, where: str) -> str:
    """Bundle paths are relative POSIX paths that stay inside the bundle."""
    if not isinstance(p, str) or not p:
        raise BundleError(f"{where}: expected a relative file path, got {p!r}")
    pp = PurePosixPath(p)
    if pp.is_absolute() or ".." in pp.parts or "\\" in p:
        raise BundleError(f"{where}: path {p!r} must be relative and stay inside the bundle")
    return str(pp)


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` entries are ints or symbolic names (``"N"``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise BundleError(f"tensor {self.name!r}: dtype {self.dtype!r} not in {DTYPES}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TensorSpec:
        d = _strict(cls, d, where)
        shape = d["shape"]
        if not isinstance(shape, list) or not all(
            (isinstance(s, int) and s >= 0) or isinstance(s, str) for s in shape
        ):
            raise BundleError(f"{where}: shape must be a list of ints >= 0 or names, got {shape}")
        return cls(name=str(d["name"]), shape=tuple(shape), dtype=d.get("dtype", "float32"))

    @property
    def batch_axis(self) -> int | None:
        """Index of the symbolic batch dimension ``"N"`` (None if the tensor has none)."""
        return self.shape.index("N") if "N" in self.shape else None

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        """The shape with every symbolic dimension set to ``batch`` (the only symbol we use)."""
        return tuple(batch if isinstance(s, str) else s for s in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its file (relative to the bundle) and its signature in call order.

    ``method`` is the ExecuTorch method name inside a ``.pte`` (``forward``); unused for ONNX.
    """

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    method: str = "forward"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> GraphSpec:
        d = _strict(cls, d, where)
        for key in ("inputs", "outputs"):
            if not isinstance(d[key], list) or not d[key]:
                raise BundleError(f"{where}.{key}: expected a non-empty list")
        return cls(
            file=_check_rel_path(d["file"], f"{where}.file"),
            inputs=tuple(
                TensorSpec.from_dict(t, f"{where}.inputs[{i}]") for i, t in enumerate(d["inputs"])
            ),
            outputs=tuple(
                TensorSpec.from_dict(t, f"{where}.outputs[{i}]")
                for i, t in enumerate(d["outputs"])
            ),
            method=str(d.get("method", "forward")),
        )


@dataclass(frozen=True)
class ModelSpec:
    """What the graphs compute, as far as a decoder needs to know.

    ``tdt_durations`` empty means no TDT head; otherwise the duration head's index ``k`` means
    advancing ``tdt_durations[k]`` frames. ``has_iam``: the null-predictor joint was trained (CTC
    on it), so ``iam_joint`` is meaningful for gating / NAR decoding. ``normalization`` records the
    feature normalization baked into the encoder graph (``global_cmvn`` or ``none``).
    """

    kind: str
    vocab_size: int
    joint_dim: int
    context_size: int = 2
    blank_id: int = 0
    tdt_durations: tuple[int, ...] = ()
    has_iam: bool = True
    normalization: str = "none"

    def __post_init__(self) -> None:
        if self.kind != "hat":
            raise BundleError(f"model.kind {self.kind!r} is not supported (known: 'hat')")
        if self.blank_id != 0:
            raise BundleError(f"model.blank_id must be 0 (the id convention), got {self.blank_id}")
        if self.vocab_size < 2:
            raise BundleError(f"model.vocab_size must be >= 2, got {self.vocab_size}")
        if self.context_size < 1 or self.joint_dim < 1:
            raise BundleError(
                f"model.context_size and joint_dim must be >= 1, got "
                f"{self.context_size}, {self.joint_dim}"
            )
        if any(int(x) != x or x < 0 for x in self.tdt_durations):
            raise BundleError(f"model.tdt_durations must be ints >= 0, got {self.tdt_durations}")
        if self.normalization not in ("none", "global_cmvn"):
            raise BundleError(
                f"model.normalization {self.normalization!r} not in ('none', 'global_cmvn')"
            )

    @property
    def is_tdt(self) -> bool:
        return bool(self.tdt_durations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "joint_dim": self.joint_dim,
            "context_size": self.context_size,
            "blank_id": self.blank_id,
            "tdt_durations": list(self.tdt_durations),
            "has_iam": self.has_iam,
            "normalization": self.normalization,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "model") -> ModelSpec:
        d = _strict(cls, d, where)
        d["tdt_durations"] = tuple(d.get("tdt_durations", ()))
        return cls(**d)


@dataclass(frozen=True)
class ChunkProfile:
    """The streaming geometry of the encoder graph.

    Each encoder call reads ``input_frames = subsampling_factor * chunk_frames + pad_length``
    feature frames and yields ``chunk_frames`` encoder frames; the next call starts
    ``feature_frames_per_chunk`` feature frames later (the ``pad_length`` frames are re-read).
    ``left_context`` is in encoder frames (the attention cache length).

    ``tail_padding_frames``: feature frames of silence a stream appends at ``input_finished`` so
    that the last real frame falls inside a full chunk (otherwise the last word is lost): with
    chunks advancing by ``S = feature_frames_per_chunk`` and reading ``T = input_frames``, the
    last real frame is covered once ``T - 1`` frames follow it at worst; sherpa-onnx's readiness
    test is strict (``processed + T < ready``), so one more. ``tail_padding_seconds`` is that
    plus one frame for the fbank's edge rounding.
    """

    chunk_frames: int
    subsampling_factor: int
    pad_length: int
    left_context: int
    frame_shift_s: float = 0.01
    tail_padding_frames: int = -1

    def __post_init__(self) -> None:
        for name in ("chunk_frames", "subsampling_factor", "left_context"):
            if getattr(self, name) < 1:
                raise BundleError(f"chunk.{name} must be >= 1, got {getattr(self, name)}")
        if self.pad_length < 0 or self.frame_shift_s <= 0:
            raise BundleError(
                f"chunk.pad_length must be >= 0 and frame_shift_s > 0, got "
                f"{self.pad_length}, {self.frame_shift_s}"
            )
        if self.tail_padding_frames == -1:
            object.__setattr__(self, "tail_padding_frames", self.input_frames)
        if self.tail_padding_frames < self.input_frames - 1:
            raise BundleError(
                f"chunk.tail_padding_frames={self.tail_padding_frames} is too small: the last "
                f"word would be lost (need >= input_frames - 1 = {self.input_frames - 1})"
            )

    @property
    def feature_frames_per_chunk(self) -> int:
        """The chunk shift in feature frames (``4C`` for 4x subsampling)."""
        return self.subsampling_factor * self.chunk_frames

    @property
    def input_frames(self) -> int:
        """``T``: feature frames per encoder call (``4C + 7``)."""
        return self.feature_frames_per_chunk + self.pad_length

    @property
    def encoder_frame_shift_s(self) -> float:
        return self.frame_shift_s * self.subsampling_factor

    @property
    def chunk_seconds(self) -> float:
        return self.feature_frames_per_chunk * self.frame_shift_s

    @property
    def tail_padding_seconds(self) -> float:
        return (self.tail_padding_frames + 1) * self.frame_shift_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_frames": self.chunk_frames,
            "subsampling_factor": self.subsampling_factor,
            "pad_length": self.pad_length,
            "left_context": self.left_context,
            "frame_shift_s": self.frame_shift_s,
            "tail_padding_frames": self.tail_padding_frames,
            # Derived, written for readers in other languages; checked on load.
            "feature_frames_per_chunk": self.feature_frames_per_chunk,
            "input_frames": self.input_frames,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "chunk") -> ChunkProfile:
        if not isinstance(d, Mapping):
            raise BundleError(f"{where}: expected an object, got {type(d).__name__}")
        d = dict(d)
        derived = {k: d.pop(k) for k in ("feature_frames_per_chunk", "input_frames") if k in d}
        prof = cls(**_strict(cls, d, where))
        for k, v in derived.items():
            if v != getattr(prof, k):
                raise BundleError(
                    f"{where}.{k}={v} disagrees with the profile, which gives {getattr(prof, k)}"
                )
        return prof


@dataclass(frozen=True)
class TokenizerSpec:
    """The sentencepiece model (text <-> ids) and the sherpa-style ``tokens.txt`` (id -> piece)."""

    model: str
    tokens: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: Any, where: str = "tokenizer") -> TokenizerSpec:
        d = _strict(cls, d, where)
        return cls(
            model=_check_rel_path(d["model"], f"{where}.model"),
            tokens=_check_rel_path(d["tokens"], f"{where}.tokens"),
        )


@dataclass(frozen=True)
class DecodingDefaults:
    """Recommended decoding thresholds for this model.

    ``theta_iam``: skip a frame when the IAM (null-predictor) blank probability exceeds it;
    ``theta_hat``: skip the label softmax when the HAT blank probability exceeds it;
    ``max_symbols_per_frame``: cap on emissions per encoder frame in greedy search.
    """

    theta_iam: float = 0.95
    theta_hat: float = 0.95
    max_symbols_per_frame: int = 4

    def __post_init__(self) -> None:
        for name in ("theta_iam", "theta_hat"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise BundleError(f"decoding.{name} must be a probability in [0, 1], got {v}")
        if self.max_symbols_per_frame < 1:
            raise BundleError(
                f"decoding.max_symbols_per_frame must be >= 1, got {self.max_symbols_per_frame}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "theta_iam": self.theta_iam,
            "theta_hat": self.theta_hat,
            "max_symbols_per_frame": self.max_symbols_per_frame,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "decoding") -> DecodingDefaults:
        return cls(**_strict(cls, d, where))


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> FileEntry:
        d = _strict(cls, d, where)
        sha, size = d["sha256"], d["size"]
        hexdigits = set("0123456789abcdef")
        if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= hexdigits):
            raise BundleError(f"{where}.sha256: expected 64 lowercase hex digits, got {sha!r}")
        if not isinstance(size, int) or size < 0:
            raise BundleError(f"{where}.size: expected an int >= 0, got {size!r}")
        return cls(sha256=sha, size=size)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(path: str | os.PathLike[str]) -> FileEntry:
    """Hash and size of one file, as recorded in ``model.json``."""
    return FileEntry(sha256=sha256_file(path), size=os.path.getsize(path))


Graphs = dict[str, dict[str, dict[str, GraphSpec]]]


@dataclass
class Manifest:
    """The parsed ``model.json``. ``graphs[format][precision][graph_name]``.

    ``train_config`` and ``model_config`` are opaque records of what made the model
    (``edgeasr.train``'s ``TrainConfig`` / ``ModelConfig`` dicts); the runtime never reads them.
    """

    features: FeatureConfig
    model: ModelSpec
    chunk: ChunkProfile
    caches: tuple[TensorSpec, ...]
    graphs: Graphs
    tokenizer: TokenizerSpec
    decoding: DecodingDefaults = field(default_factory=DecodingDefaults)
    train_config: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    name: str = ""
    created: str = ""
    edgeasr_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.check_consistency()

    def check_consistency(self) -> None:
        """Cross-field checks: known formats/precisions/graph names, caches match the encoder."""
        for fmt, by_prec in self.graphs.items():
            if fmt not in FORMATS:
                raise BundleError(f"graphs: unknown format {fmt!r} (known: {FORMATS})")
            for prec, by_name in by_prec.items():
                if prec not in PRECISIONS:
                    raise BundleError(
                        f"graphs.{fmt}: unknown precision {prec!r} (known: {PRECISIONS})"
                    )
                expected = SHERPA_GRAPHS if fmt == "sherpa" else EDGEASR_GRAPHS
                unknown = sorted(set(by_name) - set(expected))
                if unknown:
                    raise BundleError(
                        f"graphs.{fmt}.{prec}: unknown graph(s) {unknown} (known: {expected})"
                    )
                if "encoder" not in by_name:
                    raise BundleError(f"graphs.{fmt}.{prec}: no encoder graph")
                if fmt != "sherpa":
                    enc = by_name["encoder"]
                    cache_in = [t.name for t in enc.inputs[1:]]
                    if cache_in != [c.name for c in self.caches]:
                        raise BundleError(
                            f"graphs.{fmt}.{prec}.encoder: cache inputs {cache_in} differ from "
                            f"caches {[c.name for c in self.caches]} (order matters)"
                        )

    def referenced_files(self) -> list[str]:
        """Every file the manifest points at (graphs + tokenizer), each once."""
        out = [self.tokenizer.model, self.tokenizer.tokens]
        for by_prec in self.graphs.values():
            for by_name in by_prec.values():
                out += [g.file for g in by_name.values()]
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            "edgeasr_version": self.edgeasr_version,
            "features": self.features.to_dict(),
            "model": self.model.to_dict(),
            "chunk": self.chunk.to_dict(),
            "caches": [c.to_dict() for c in self.caches],
            "graphs": {
                fmt: {
                    prec: {name: g.to_dict() for name, g in by_name.items()}
                    for prec, by_name in by_prec.items()
                }
                for fmt, by_prec in self.graphs.items()
            },
            "tokenizer": self.tokenizer.to_dict(),
            "decoding": self.decoding.to_dict(),
            "train_config": self.train_config,
            "model_config": self.model_config,
            "files": {p: e.to_dict() for p, e in sorted(self.files.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        if not isinstance(d, Mapping):
            raise BundleError(f"top level: expected an object, got {type(d).__name__}")
        version = d.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"schema_version: expected an int, got {version!r}")
        if version != SCHEMA_VERSION:
            fix = "upgrade edgeasr" if version > SCHEMA_VERSION else "re-export the model"
            raise BundleError(
                f"schema_version {version} is not supported by edgeasr (this version reads "
                f"{SCHEMA_VERSION}); {fix}"
            )
        d = _strict(cls, d, "top level")
        try:
            features = FeatureConfig.from_dict(dict(d["features"]))
        except (ValueError, TypeError) as e:
            raise BundleError(f"features: {e}") from None
        graphs_in = d["graphs"]
        if not isinstance(graphs_in, Mapping):
            raise BundleError("graphs: expected an object format -> precision -> name -> graph")
        graphs: Graphs = {}
        for fmt, by_prec in graphs_in.items():
            if not isinstance(by_prec, Mapping):
                raise BundleError(f"graphs.{fmt}: expected an object precision -> graphs")
            graphs[fmt] = {}
            for prec, by_name in by_prec.items():
                if not isinstance(by_name, Mapping):
                    raise BundleError(f"graphs.{fmt}.{prec}: expected an object name -> graph")
                graphs[fmt][prec] = {
                    name: GraphSpec.from_dict(g, f"graphs.{fmt}.{prec}.{name}")
                    for name, g in by_name.items()
                }
        files_in = d.get("files", {})
        if not isinstance(files_in, Mapping):
            raise BundleError("files: expected an object path -> {sha256, size}")
        caches_in = d["caches"]
        if not isinstance(caches_in, list):
            raise BundleError("caches: expected a list")
        train_config = d.get("train_config", {})
        model_config = d.get("model_config", {})
        for key, value in (("train_config", train_config), ("model_config", model_config)):
            if not isinstance(value, Mapping):
                raise BundleError(f"{key}: expected an object")
        return cls(
            features=features,
            model=ModelSpec.from_dict(d["model"]),
            chunk=ChunkProfile.from_dict(d["chunk"]),
            caches=tuple(TensorSpec.from_dict(c, f"caches[{i}]") for i, c in enumerate(caches_in)),
            graphs=graphs,
            tokenizer=TokenizerSpec.from_dict(d["tokenizer"]),
            decoding=DecodingDefaults.from_dict(d.get("decoding", {})),
            train_config=dict(train_config),
            model_config=dict(model_config),
            files={
                _check_rel_path(p, f"files[{p!r}]"): FileEntry.from_dict(e, f"files[{p!r}]")
                for p, e in files_in.items()
            },
            name=str(d.get("name", "")),
            created=str(d.get("created", "")),
            edgeasr_version=str(d.get("edgeasr_version", "")),
            schema_version=version,
        )


# --------------------------------------------------------------------------------------------
# Loading


def _safe_extract(tar_path: Path, dest: Path) -> None:
    """Extract a bundle archive, refusing links, devices and paths that escape ``dest``."""
    try:
        with tarfile.open(tar_path) as tf:
            for m in tf.getmembers():
                if not (m.isfile() or m.isdir()):
                    raise BundleError(f"{tar_path}: archive member {m.name!r} is not a plain file")
                _check_rel_path(m.name, f"{tar_path}: archive member")
            tf.extractall(dest, filter="data")
    except tarfile.TarError as e:
        raise BundleError(f"{tar_path}: not a readable tar archive ({e})") from None


def _find_root(extracted: Path) -> Path:
    """An archive holds model.json at its top or inside one top-level folder."""
    if (extracted / MODEL_JSON).is_file():
        return extracted
    subdirs = [p for p in extracted.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MODEL_JSON).is_file():
        return subdirs[0]
    raise BundleError(f"archive has no {MODEL_JSON} at its top or in a single top-level folder")


class Bundle:
    """A loaded, validated bundle. Use :meth:`load`; paths it returns are absolute."""

    def __init__(self, root: Path, manifest: Manifest, source: Path,
                 tmpdir: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.source = source
        self._tmpdir = tmpdir  # keeps an extracted archive alive as long as the Bundle

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify_hashes: bool = True) -> Bundle:
        """Load a bundle folder, its ``model.json``, or a ``.tar`` archive, and validate it.

        Raises :class:`BundleError` naming the file and the problem for: a missing path or file,
        malformed JSON, an unknown schema version, a schema violation, a size or sha256 mismatch.
        ``verify_hashes=False`` skips the sha256 pass (sizes are still checked) for fast startup
        on a trusted device.
        """
        source = Path(path)
        if not source.exists():
            raise BundleError(f"{source}: no such bundle (folder, model.json or .tar)")
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if source.is_file() and source.name != MODEL_JSON:
            if not tarfile.is_tarfile(source):
                raise BundleError(f"{source}: not a bundle folder, model.json or .tar archive")
            tmp = tempfile.TemporaryDirectory(prefix="edgeasr-bundle-")
            _safe_extract(source, Path(tmp.name))
            root = _find_root(Path(tmp.name))
        else:
            root = source.parent if source.is_file() else source
        mj = root / MODEL_JSON
        if not mj.is_file():
            raise BundleError(f"{mj}: missing (every bundle has a {MODEL_JSON})")
        try:
            raw = json.loads(mj.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{mj}: malformed JSON ({e})") from None
        try:
            manifest = Manifest.from_dict(raw)
        except BundleError as e:
            raise BundleError(f"{mj}: {e}") from None
        except (TypeError, ValueError) as e:
            raise BundleError(f"{mj}: invalid value ({e})") from None
        bundle = cls(root, manifest, source, tmp)
        bundle.verify(hashes=verify_hashes)
        return bundle

    def verify(self, hashes: bool = True) -> None:
        """Every referenced file is listed in ``files``; every listed file exists with its size
        (and sha256 unless ``hashes`` is false)."""
        m = self.manifest
        unlisted = [p for p in m.referenced_files() if p not in m.files]
        if unlisted:
            raise BundleError(
                f"{self.root / MODEL_JSON}: file(s) {unlisted} are used but not listed in 'files' "
                "(no hash to check them against)"
            )
        for rel, entry in m.files.items():
            p = self.root / rel
            if not p.is_file():
                raise BundleError(f"{p}: missing (listed in {MODEL_JSON})")
            size = p.stat().st_size
            if size != entry.size:
                raise BundleError(
                    f"{p}: size {size} bytes, {MODEL_JSON} says {entry.size} (corrupt or replaced)"
                )
            if hashes:
                digest = sha256_file(p)
                if digest != entry.sha256:
                    raise BundleError(
                        f"{p}: sha256 mismatch: file has {digest}, {MODEL_JSON} says "
                        f"{entry.sha256} (corrupt or replaced)"
                    )

    # Accessors -----------------------------------------------------------------------------

    @property
    def features(self) -> FeatureConfig:
        return self.manifest.features

    @property
    def model(self) -> ModelSpec:
        return self.manifest.model

    @property
    def chunk(self) -> ChunkProfile:
        return self.manifest.chunk

    @property
    def caches(self) -> tuple[TensorSpec, ...]:
        return self.manifest.caches

    @property
    def decoding(self) -> DecodingDefaults:
        return self.manifest.decoding

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def tokenizer_path(self) -> Path:
        return self.path(self.manifest.tokenizer.model)

    @property
    def tokens_path(self) -> Path:
        return self.path(self.manifest.tokenizer.tokens)

    def variants(self) -> Iterator[tuple[str, str]]:
        """(format, precision) pairs present in the bundle."""
        for fmt, by_prec in self.manifest.graphs.items():
            for prec in by_prec:
                yield fmt, prec

    def graphs(self, fmt: str, precision: str = "fp32") -> dict[str, GraphSpec]:
        """The graphs of one variant; a clear error lists what the bundle does have."""
        try:
            return self.manifest.graphs[fmt][precision]
        except KeyError:
            have = ", ".join(f"{f}/{p}" for f, p in self.variants()) or "none"
            raise BundleError(
                f"{self.source}: no {fmt}/{precision} graphs in this bundle (has: {have})"
            ) from None

    def graph(self, fmt: str, name: str, precision: str = "fp32") -> tuple[GraphSpec, Path]:
        graphs = self.graphs(fmt, precision)
        if name not in graphs:
            raise BundleError(
                f"{self.source}: {fmt}/{precision} has no {name!r} graph (has: {sorted(graphs)})"
            )
        g = graphs[name]
        return g, self.path(g.file)

    def describe(self) -> str:
        """A human summary: model, geometry, caches, variants with sizes, files."""
        m = self.manifest
        c = m.chunk
        lines = [
            f"bundle {m.name or self.root.name} (schema {m.schema_version}, "
            f"edgeasr {m.edgeasr_version or '?'}, created {m.created or '?'})",
            f"  model: {m.model.kind.upper()} transducer, vocab {m.model.vocab_size} "
            f"(blank {m.model.blank_id}), joint dim {m.model.joint_dim}, "
            f"context {m.model.context_size}, "
            + (f"TDT durations {list(m.model.tdt_durations)}, " if m.model.is_tdt else "")
            + f"IAM {'yes' if m.model.has_iam else 'no'}, normalization {m.model.normalization}",
            f"  features: {m.features.num_mel_bins}-bin fbank @ {m.features.sample_rate} Hz, "
            f"{m.features.frame_length_ms:g}/{m.features.frame_shift_ms:g} ms",
            f"  chunk: {c.chunk_frames} encoder frames = {c.feature_frames_per_chunk} feature "
            f"frames ({c.chunk_seconds * 1000:.0f} ms), input T={c.input_frames} "
            f"(pad {c.pad_length}), subsampling {c.subsampling_factor}x, left context "
            f"{c.left_context} frames ({c.left_context * c.encoder_frame_shift_s:.2f} s), "
            f"tail padding {c.tail_padding_seconds:.2f} s",
            "  caches: "
            + ", ".join(f"{t.name}{list(t.shape)}:{t.dtype}" for t in m.caches),
            f"  decoding: theta_iam {m.decoding.theta_iam}, theta_hat {m.decoding.theta_hat}, "
            f"max symbols/frame {m.decoding.max_symbols_per_frame}",
        ]
        for fmt, prec in self.variants():
            graphs = m.graphs[fmt][prec]
            total = sum(m.files[g.file].size for g in graphs.values() if g.file in m.files)
            lines.append(
                f"  {fmt}/{prec}: {', '.join(graphs)} ({_human(total)})"
            )
        lines.append(f"  files: {len(m.files)}, {_human(sum(e.size for e in m.files.values()))}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Bundle({str(self.source)!r})"


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def pack_bundle(folder: str | os.PathLike[str], archive: str | os.PathLike[str]) -> Path:
    """Write ``folder`` (a bundle with model.json) as one uncompressed ``.tar``.

    Uncompressed on purpose: the graphs barely compress, and a device can read a plain tar.
    Members are stored relative to the bundle top with model.json first.
    """
    folder, archive = Path(folder), Path(archive)
    if not (folder / MODEL_JSON).is_file():
        raise BundleError(f"{folder}: not a bundle folder (no {MODEL_JSON})")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MODEL_JSON)
    with tarfile.open(archive, "w") as tf:
        tf.add(folder / MODEL_JSON, arcname=MODEL_JSON)
        for p in files:
            tf.add(p, arcname=p.relative_to(folder).as_posix())
    return archive
