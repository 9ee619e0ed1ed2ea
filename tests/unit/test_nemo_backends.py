"""The NeMo backends without NeMo: config validation, model-spec dispatch, pure helpers.

These run in the CPU venv, where neither torch nor NeMo is installed: validating a config
that names the nemo backends must not need them. The engine itself is tested in
``tests/models/test_nemo_asr.py`` and ``tests/models/test_nemo_tts.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from deployments.backends.nemo_asr import NemoASR, hypothesis_texts, nemo_source, resolve_device
from deployments.backends.nemo_tts import NemoTTS, split_sentences
from deployments.registry import backend_class
from serve_app.config import AppConfig

PARAKEET = "nvidia/parakeet-tdt-0.6b-v2"
ASR_OPTIONS = {
    "device": "cuda:0",
    "compute_dtype": "bfloat16",
    "use_amp": True,
    "max_batch_size": 32,
    "batch_wait_timeout_s": 0.005,
}


def _app(asr_options: dict[str, Any] | None = None, tts_options: dict[str, Any] | None = None) -> AppConfig:
    return AppConfig.model_validate(
        {
            "asr": {"backend": "nemo", "model": PARAKEET, "options": asr_options or {}},
            "tts": {"backend": "nemo", "model": "nvidia/tts_en_fastpitch", "options": tts_options or {}},
        }
    )


def test_app_config_accepts_the_nemo_backends() -> None:
    config = _app(ASR_OPTIONS, {"vocoder": "nvidia/tts_hifigan", "pace": 1.1, "chunk_ms": 120})
    assert (config.asr.backend, config.asr.model, config.asr.options) == ("nemo", PARAKEET, ASR_OPTIONS)
    assert config.tts.options["vocoder"] == "nvidia/tts_hifigan"
    assert backend_class("asr", "nemo") is NemoASR
    assert backend_class("tts", "nemo") is NemoTTS


def test_defaults_are_the_production_models_on_the_best_device() -> None:
    asr = NemoASR.Options()
    assert (asr.device, asr.max_batch_size, asr.batch_wait_timeout_s) == ("auto", 16, 0.01)
    tts = NemoTTS.Options()
    assert (tts.device, tts.vocoder) == ("auto", "nvidia/tts_hifigan")


@pytest.mark.parametrize(
    ("asr_options", "tts_options", "field"),
    [
        ({"max_batch_sise": 8}, None, "max_batch_sise"),  # typo
        ({"device": "gpu"}, None, "device"),
        ({"device": "cuda:x"}, None, "device"),
        ({"compute_dtype": "int8"}, None, "compute_dtype"),
        ({"max_batch_size": 0}, None, "max_batch_size"),
        ({"batch_wait_timeout_s": -1}, None, "batch_wait_timeout_s"),
        (None, {"vocodr": "nvidia/tts_hifigan"}, "vocodr"),  # typo
        (None, {"pace": 0}, "pace"),
        (None, {"chunk_ms": 1}, "chunk_ms"),
        (None, {"speaker": -1}, "speaker"),
    ],
)
def test_app_config_rejects_bad_nemo_options(
    asr_options: dict[str, Any] | None, tts_options: dict[str, Any] | None, field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        _app(asr_options, tts_options)


def test_validating_a_nemo_config_imports_neither_nemo_nor_torch() -> None:
    code = (
        "import sys\n"
        "from serve_app.config import AppConfig\n"
        "AppConfig.model_validate({'asr': {'backend': 'nemo'}, 'tts': {'backend': 'nemo'}})\n"
        "print(sorted(m for m in ('nemo', 'torch') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", [PARAKEET, "nvidia/tts_en_fastpitch", "stt_en_fastconformer_ctc_large"])
def test_a_model_name_goes_to_from_pretrained(name: str) -> None:
    assert nemo_source(name) == ("from_pretrained", name)


def test_a_local_nemo_file_or_its_directory_goes_to_restore_from(tmp_path: Path) -> None:
    model = tmp_path / "model" / "parakeet.nemo"
    model.parent.mkdir()
    model.write_bytes(b"")
    assert nemo_source(str(model)) == ("restore_from", str(model))
    assert nemo_source(str(model.parent)) == ("restore_from", str(model))
    (model.parent / "other.nemo").write_bytes(b"")
    with pytest.raises(ValueError, match=r"exactly one \*\.nemo"):
        nemo_source(str(model.parent))
    with pytest.raises(ValueError, match="not an existing path"):
        nemo_source(str(tmp_path / "missing.nemo"))


def test_explicit_devices_need_no_torch() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"


def test_transcription_results_of_every_nemo_shape_become_texts() -> None:
    # Plain objects with NeMo's attribute names stand for Hypothesis / NBestHypotheses here:
    # only the shapes matter to this helper; the real classes are used in tests/models.
    hyp = SimpleNamespace
    assert hypothesis_texts([hyp(text=" a b "), hyp(text="")]) == ["a b", ""]  # NeMo 3.0
    assert hypothesis_texts(([hyp(text="best")], [[hyp(text="best"), hyp(text="x")]])) == ["best"]
    assert hypothesis_texts(["plain string"]) == ["plain string"]
    assert hypothesis_texts([[hyp(text="first"), hyp(text="second")]]) == ["first"]
    assert hypothesis_texts([hyp(n_best_hypotheses=[hyp(text="top"), hyp(text="next")])]) == ["top"]
    with pytest.raises(TypeError, match="unexpected NeMo transcription result"):
        hypothesis_texts([hyp(text=None)])


def test_sentences_end_at_end_punctuation_followed_by_space() -> None:
    assert split_sentences("Hi. It is 3.5 degrees! Really? ok") == [
        "Hi.",
        "It is 3.5 degrees!",
        "Really?",
        "ok",
    ]
    assert split_sentences("   ") == []
