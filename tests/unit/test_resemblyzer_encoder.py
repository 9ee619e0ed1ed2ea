"""The torch-free parts of the Resemblyzer backend: checkpoint reader, mel features, windows, LSTM.

Checkpoints are written here in torch's two formats by hand (torch is not installed), with
fake ``torch`` modules standing in while pickling so that the pickles name torch's globals.
The match with Resemblyzer's real encoder is in ``tests/models/test_speaker_embedding.py``.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployments.backends.resemblyzer_speaker import (
    GE2EEncoder,
    mel_spectrogram,
    normalize_volume,
    slaney_mel_filters,
)
from deployments.backends.speaker_windows import window_layout, window_starts
from deployments.backends.torch_checkpoint import load_checkpoint, load_state_dict


class FakeFloatStorage:
    """Pickled as ``torch.FloatStorage``: the storage type named in a persistent id."""


def fake_rebuild_tensor_v2(*args: Any) -> None:
    """Pickled as ``torch._utils._rebuild_tensor_v2``; never called while writing."""


# pickle names a global by these two attributes (and checks the name finds the same object).
FakeFloatStorage.__module__, FakeFloatStorage.__qualname__ = "torch", "FloatStorage"
fake_rebuild_tensor_v2.__module__, fake_rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"


class _FakeTensor:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array

    def __reduce__(self) -> tuple:
        stride = tuple(s // self.array.itemsize for s in self.array.strides)
        storage = ("storage", FakeFloatStorage, self.key, "cpu", self.array.size)
        return fake_rebuild_tensor_v2, (
            storage,
            0,
            self.array.shape,
            stride,
            False,
            collections.OrderedDict(),
        )


class _CheckpointPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return obj if isinstance(obj, tuple) and obj[:1] == ("storage",) else None


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake ``torch`` and ``torch._utils`` modules, so pickle names the fakes as torch's globals."""
    torch_module = types.ModuleType("torch")
    utils_module = types.ModuleType("torch._utils")
    torch_module.FloatStorage = FakeFloatStorage  # type: ignore[attr-defined]
    utils_module._rebuild_tensor_v2 = fake_rebuild_tensor_v2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)


def _pickled(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _CheckpointPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _tensors(state: dict[str, np.ndarray]) -> collections.OrderedDict:
    return collections.OrderedDict((k, _FakeTensor(str(i), v)) for i, (k, v) in enumerate(state.items()))


def write_zip_checkpoint(path: Path, state: dict[str, np.ndarray]) -> None:
    """A state dict in torch's zip format (``torch.save`` since 1.6)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _pickled({"model_state": _tensors(state)}))
        for i, array in enumerate(state.values()):
            archive.writestr(f"archive/data/{i}", np.ascontiguousarray(array, "<f4").tobytes())


def write_legacy_checkpoint(path: Path, state: dict[str, np.ndarray]) -> None:
    """A state dict in torch's legacy format: header pickles, the object, keys, raw storages."""
    parts = [_pickled(0x1950A86A20F9469CFC6C), _pickled(1001), _pickled({"little_endian": True})]
    parts += [
        _pickled({"step": 3, "model_state": _tensors(state)}),
        _pickled([str(i) for i in range(len(state))]),
    ]
    for array in state.values():
        parts.append(struct.pack("<q", array.size) + np.ascontiguousarray(array, "<f4").tobytes())
    path.write_bytes(b"".join(parts))


def tiny_state(hidden: int = 4, embedding: int = 3, layers: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A random GE2E-shaped state dict (40 mel inputs) with small dimensions."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for layer in range(layers):
        inputs = 40 if layer == 0 else hidden
        state[f"lstm.weight_ih_l{layer}"] = rng.normal(0, 0.3, (4 * hidden, inputs)).astype(np.float32)
        state[f"lstm.weight_hh_l{layer}"] = rng.normal(0, 0.3, (4 * hidden, hidden)).astype(np.float32)
        state[f"lstm.bias_ih_l{layer}"] = rng.normal(0, 0.3, 4 * hidden).astype(np.float32)
        state[f"lstm.bias_hh_l{layer}"] = rng.normal(0, 0.3, 4 * hidden).astype(np.float32)
    state["linear.weight"] = rng.normal(0, 0.5, (embedding, hidden)).astype(np.float32)
    state["linear.bias"] = np.abs(rng.normal(0, 0.5, embedding)).astype(np.float32)
    return state


@pytest.mark.parametrize("writer", [write_zip_checkpoint, write_legacy_checkpoint])
def test_checkpoint_round_trip(fake_torch: None, tmp_path: Path, writer: Any) -> None:
    state = tiny_state()
    writer(tmp_path / "model.pt", state)
    loaded = load_checkpoint(tmp_path / "model.pt")["model_state"]
    assert list(loaded) == list(state)
    for key, array in state.items():
        np.testing.assert_array_equal(loaded[key], array)
    # load_state_dict unwraps a training checkpoint's model_state.
    assert list(load_state_dict(tmp_path / "model.pt")) == list(state)


def test_checkpoint_reader_refuses_other_globals(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model_state": os.getcwd}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_checkpoint(evil)
    # The same refusal inside a zip checkpoint.
    with zipfile.ZipFile(tmp_path / "evil_zip.pt", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(os.system, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_checkpoint(tmp_path / "evil_zip.pt")


def _reference_lstm_embedding(state: dict[str, np.ndarray], mel: np.ndarray) -> np.ndarray:
    """One window, one step at a time, straight from PyTorch's LSTM equations, in float64."""

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    seq = mel.astype(np.float64)
    layer = 0
    while f"lstm.weight_ih_l{layer}" in state:
        w_ih, w_hh = state[f"lstm.weight_ih_l{layer}"], state[f"lstm.weight_hh_l{layer}"]
        b = state[f"lstm.bias_ih_l{layer}"] + state[f"lstm.bias_hh_l{layer}"]
        hidden = w_hh.shape[1]
        h, c, outputs = np.zeros(hidden), np.zeros(hidden), []
        for x in seq:
            z = w_ih @ x + w_hh @ h + b
            i, f, g, o = (z[k * hidden : (k + 1) * hidden] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outputs.append(h)
        seq, layer = np.array(outputs), layer + 1
    raw = np.maximum(state["linear.weight"] @ seq[-1] + state["linear.bias"], 0.0)
    return raw / np.linalg.norm(raw)


def test_batched_encoder_matches_step_by_step_lstm() -> None:
    state = tiny_state()
    mels = np.random.default_rng(1).uniform(0, 2, (5, 12, 40)).astype(np.float32)
    batched = GE2EEncoder(state)(mels)
    for window, vector in zip(mels, batched, strict=True):
        np.testing.assert_allclose(vector, _reference_lstm_embedding(state, window), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-6)


def test_slaney_filters_have_librosa_shape_and_unit_area() -> None:
    filters = slaney_mel_filters()
    assert filters.shape == (40, 201)
    assert (filters >= 0).all()
    # Slaney normalisation: every triangle has area 1 over Hz (bins are 40 Hz apart).
    np.testing.assert_allclose(filters.sum(axis=1) * 40.0, 1.0, atol=0.05)
    # Peak bins of librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), computed with librosa 0.11.
    assert [int(filters[i].argmax()) for i in (0, 10, 39)] == [2, 20, 185]
    np.testing.assert_allclose(
        [filters[i].sum() for i in (0, 10, 39)], [0.0248090, 0.0248090, 0.0249788], rtol=1e-5
    )


def test_mel_spectrogram_frames_and_tone_band() -> None:
    t = np.arange(16_000) / 16_000
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    mel = mel_spectrogram(tone)
    assert mel.shape == (101, 40)  # centred frames: 1 + samples // 160
    loudest = mel[50].argmax()
    filters = slaney_mel_filters()
    assert filters[loudest, 25] == filters[:, 25].max()  # the band whose filter peaks nearest 1 kHz (bin 25)
    np.testing.assert_array_equal(mel_spectrogram(np.zeros(800)), 0.0)


def test_volume_is_raised_to_minus_30_dbfs_but_never_lowered() -> None:
    quiet = np.full(1000, 0.001, dtype=np.float32)
    raised = normalize_volume(quiet)
    np.testing.assert_allclose(20 * np.log10(np.sqrt(np.mean(raised**2))), -30.0, atol=1e-3)
    loud = np.full(1000, 0.5, dtype=np.float32)
    assert normalize_volume(loud) is loud
    silence = np.zeros(1000, dtype=np.float32)
    np.testing.assert_array_equal(normalize_volume(silence), 0.0)


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (160, [0]),
        (200, [0, 40]),
        (215, [0, 40, 55]),  # the last window ends with the audio
        (159, []),
    ],
)
def test_window_starts_cover_the_audio_to_its_end(frames: int, expected: list[int]) -> None:
    assert window_starts(frames, 160, 40) == expected


@pytest.mark.parametrize(
    ("frames", "pad_short", "expected"),
    [
        (215, False, ([0, 40, 55], 160)),
        (215, True, ([0, 40, 55], 160)),
        (100, True, ([0], 160)),  # short audio: one full window, the caller zero-pads
        (100, False, ([0], 100)),  # short audio: one window over just the audio
    ],
)
def test_window_layout_handles_audio_shorter_than_a_window(
    frames: int, pad_short: bool, expected: tuple[list[int], int]
) -> None:
    assert window_layout(frames, 160, 40, pad_short=pad_short) == expected
