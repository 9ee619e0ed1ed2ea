"""Riva audio in: raw encodings at any rate, a WAV header trusted over the config, files, limits."""

from __future__ import annotations

import io
import struct
import wave

import grpc
import numpy as np
import pytest

from serve_app.engine.audio.codecs import ALAW_ENCODE, MULAW_ENCODE, encode_g711
from serve_app.protocols.grpc_api.proto import riva_audio_pb2
from serve_app.protocols.grpc_api.status import GrpcAbort
from serve_app.protocols.riva.audio_in import AudioSpec, RivaAudioIn, audio_spec, decode_whole

E = riva_audio_pb2.AudioEncoding
ASR_RATE = 16_000
MAX_FILE = 1 << 20


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12_000).astype("<i2")


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def encoded_file(samples: np.ndarray, rate: int, fmt: str, codec: str) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buf.getvalue()


def stream_all(decoder: RivaAudioIn, data: bytes, chunk: int) -> np.ndarray:
    out = b"".join(decoder.feed(data[at : at + chunk]) for at in range(0, len(data), chunk))
    return np.frombuffer(out + decoder.flush(), dtype="<i2")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def close_to(got: np.ndarray, want: np.ndarray) -> None:
    n = min(len(got), len(want))
    assert abs(len(got) - len(want)) <= 0.01 * len(want) + 64
    assert rms(got[:n] - want[:n]) < 0.05 * rms(want)


def test_linear_pcm_at_the_asr_rate_passes_through_unchanged_whatever_the_chunking() -> None:
    audio = tone(ASR_RATE)
    got = stream_all(RivaAudioIn(AudioSpec(E.LINEAR_PCM, ASR_RATE), MAX_FILE), audio.tobytes(), chunk=333)
    assert np.array_equal(got, audio)  # odd chunks: split samples are carried, not lost


@pytest.mark.parametrize("rate", [8000, 22_050, 44_100, 48_000])
def test_linear_pcm_at_other_rates_is_resampled_to_16_khz(rate: int) -> None:
    got = stream_all(RivaAudioIn(AudioSpec(E.LINEAR_PCM, rate), MAX_FILE), tone(rate).tobytes(), chunk=3200)
    close_to(got, tone(ASR_RATE))


def test_unspecified_encoding_is_linear_pcm() -> None:
    got = stream_all(
        RivaAudioIn(AudioSpec(E.ENCODING_UNSPECIFIED, ASR_RATE), MAX_FILE), tone(ASR_RATE).tobytes(), 640
    )
    assert np.array_equal(got, tone(ASR_RATE))


@pytest.mark.parametrize(
    ("encoding", "table"), [(E.MULAW, MULAW_ENCODE), (E.ALAW, ALAW_ENCODE)], ids=["mulaw", "alaw"]
)
def test_g711_at_8_khz(encoding: int, table: np.ndarray) -> None:
    codes = encode_g711(tone(8000).tobytes(), table)
    got = stream_all(RivaAudioIn(AudioSpec(encoding, 8000), MAX_FILE), codes, chunk=160)
    close_to(got, tone(ASR_RATE))


def test_interleaved_channels_are_mixed_down() -> None:
    left, right = tone(ASR_RATE), np.zeros(ASR_RATE, dtype="<i2")
    stereo = np.stack([left, right], axis=1).reshape(-1)
    got = stream_all(RivaAudioIn(AudioSpec(E.LINEAR_PCM, ASR_RATE, 2), MAX_FILE), stereo.tobytes(), 1001)
    close_to(got, (left / 2).astype("<i2"))


def test_a_wav_header_is_trusted_over_the_config() -> None:
    # The config says 8 kHz μ-law (Riva would refuse: "config format doesn't match with header").
    data = wav_bytes(tone(22_050), 22_050)
    decoder = RivaAudioIn(AudioSpec(E.MULAW, 8000), MAX_FILE)
    got = stream_all(decoder, data, chunk=5)  # the header arrives in 5-byte pieces
    assert decoder.kind == "wav"
    close_to(got, tone(ASR_RATE))


def test_a_wav_file_with_no_encoding_and_no_rate_as_transcribe_file_sends_it() -> None:
    data = wav_bytes(np.stack([tone(48_000)] * 2, axis=1).reshape(-1), 48_000, channels=2)
    got = stream_all(RivaAudioIn(audio_spec(0, 0, 0), MAX_FILE), data, chunk=3200)
    close_to(got, tone(ASR_RATE))


def test_raw_audio_without_a_sample_rate_is_refused() -> None:
    decoder = RivaAudioIn(AudioSpec(E.LINEAR_PCM, 0), MAX_FILE)
    with pytest.raises(GrpcAbort) as refused:
        decoder.feed(bytes(640))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "sample_rate_hertz is required" in refused.value.details


def test_a_stream_shorter_than_a_header_is_raw_audio() -> None:
    decoder = RivaAudioIn(AudioSpec(E.LINEAR_PCM, ASR_RATE), MAX_FILE)
    assert decoder.feed(b"\x01\x00\x02\x00") == b""
    assert decoder.flush() == b"\x01\x00\x02\x00"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((7, 16000, 1), "encoding 7 is not supported; send LINEAR_PCM, MULAW or ALAW"),
        ((E.LINEAR_PCM, 500, 1), "sample_rate_hertz 500 is out of range"),
        ((E.LINEAR_PCM, 16000, 99), "audio_channel_count 99"),
        ((E.LINEAR_PCM, -1, 1), "out of range"),
    ],
)
def test_impossible_configs_are_invalid_arguments(args: tuple[int, int, int], needle: str) -> None:
    with pytest.raises(GrpcAbort) as refused:
        audio_spec(*args)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and needle in refused.value.details


def test_a_wav_that_ends_before_its_data_is_refused_at_the_end() -> None:
    decoder = RivaAudioIn(AudioSpec(E.LINEAR_PCM, ASR_RATE), MAX_FILE)
    decoder.feed(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(64))
    with pytest.raises(GrpcAbort) as refused:
        decoder.flush()
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "audio data" in refused.value.details


def test_a_wav_of_an_unknown_codec_is_refused_saying_what_is_supported() -> None:
    fmt = struct.pack("<HHIIHH", 85, 1, 16000, 32000, 2, 16)  # MP3 inside WAV
    header = b"RIFF\x00\x00\x00\x00WAVEfmt " + struct.pack("<I", 16) + fmt + b"data\x00\x00\x00\x00"
    with pytest.raises(GrpcAbort) as refused:
        RivaAudioIn(AudioSpec(E.LINEAR_PCM, ASR_RATE), MAX_FILE).feed(header)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unsupported WAV" in refused.value.details and "voxray takes" in refused.value.details


@pytest.mark.parametrize(("fmt", "codec", "rate"), [("flac", "flac", 16_000), ("ogg", "libopus", 48_000)])
def test_flac_and_ogg_files_are_decoded_whole_recognised_by_their_first_bytes(
    fmt: str, codec: str, rate: int
) -> None:
    data = encoded_file(tone(rate), rate, fmt, codec)
    got = np.frombuffer(decode_whole(data, AudioSpec(E.LINEAR_PCM, 8000), MAX_FILE, 60.0), dtype="<i2")
    assert abs(len(got) - ASR_RATE) < 0.05 * ASR_RATE and rms(got) > 0.5 * rms(tone(ASR_RATE))


def test_garbage_declared_as_flac_is_refused() -> None:
    with pytest.raises(GrpcAbort) as refused:
        decode_whole(b"\x13\x37" * 500, AudioSpec(E.FLAC), MAX_FILE, 60.0)
    assert (
        refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        and "could not be decoded" in refused.value.details
    )


def test_recognize_audio_is_bounded_in_length_and_in_file_size() -> None:
    with pytest.raises(GrpcAbort) as long:
        decode_whole(bytes(8000 * 61), AudioSpec(E.MULAW, 8000), MAX_FILE, 60.0)
    assert long.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "60 s" in long.value.details
    with pytest.raises(GrpcAbort) as big:
        decode_whole(b"fLaC" + bytes(MAX_FILE), AudioSpec(E.FLAC), MAX_FILE, 60.0)
    assert big.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(MAX_FILE) in big.value.details


def test_recognize_with_no_audio_is_an_invalid_argument() -> None:
    with pytest.raises(GrpcAbort) as empty:
        decode_whole(b"", AudioSpec(E.LINEAR_PCM, ASR_RATE), MAX_FILE, 60.0)
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT and "no audio" in empty.value.details
