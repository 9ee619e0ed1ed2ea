"""NVIDIA NeMo speech recognition (Parakeet), the production GPU ASR.

The production model is NVIDIA Parakeet (``nvidia/parakeet-tdt-0.6b-v2``: a FastConformer
encoder with a TDT decoder), loaded by name through ``nemo_toolkit``. Any NeMo ASR model
works the same way: ``ASRModel`` reads the model class from the checkpoint's config, so a
CTC, RNNT, TDT or hybrid model is dispatched to its own ``transcribe``.

Utterances from many sessions are transcribed together: :meth:`NemoASR.transcribe_batch`
runs one ``model.transcribe`` call (one padded forward pass per ``max_batch_size``
utterances) for a whole batch, and the ASR deployment groups concurrent calls into such
batches with Ray Serve's ``@serve.batch`` (see ``deployments/asr.py``). On a GPU one batch of
16 short utterances costs about as much as one utterance, so batching is where the
throughput comes from.

NeMo and torch are imported only in the constructor: validating a config, or importing this
module on a CPU image without NeMo, stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.backends.base import Backend
from deployments.models import is_local_spec, model_file, resolve_model
from deployments.types import DecodeOptions, Transcript

DEFAULT_MODEL = "nvidia/parakeet-tdt-0.6b-v2"

# One utterance of a batch: mono PCM16 bytes, their sample rate, the requested language.
Utterance = tuple[bytes, int, str | None]

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class NemoASROptions(BaseModel):
    """Options of :class:`NemoASR`.

    Attributes:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:<n>``.
        compute_dtype: Precision of the encoder and decoder on CUDA. On the CPU NeMo runs
            float32 whatever this says (as NeMo's own inference pipelines do).
        use_amp: With a ``compute_dtype`` other than float32: keep the weights in float32 and
            run under ``torch.autocast`` (NeMo's default, the safe choice), or, when false,
            cast the weights themselves (half the weight memory; the feature extractor still
            runs in float32, NeMo makes sure of that).
        max_batch_size: Most utterances in one forward pass, and in one ``@serve.batch``
            batch of the ASR deployment. Set the deployment's ``max_ongoing_requests`` at
            least this high, or a replica never sees a full batch.
        batch_wait_timeout_s: How long the ASR deployment waits for more utterances after
            the first before it runs a batch: latency paid for throughput. 10 ms is small
            next to an utterance's ~30-80 ms GPU transcription.
    """

    model_config = ConfigDict(extra="forbid")

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    use_amp: bool = True
    max_batch_size: int = Field(default=16, ge=1, le=512)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0, le=1.0)


class NemoASR(Backend):
    """Transcribe utterances, one or a batch at a time, with a NeMo ASR model.

    Args:
        model: A NeMo model name (default ``nvidia/parakeet-tdt-0.6b-v2``; a Hugging Face
            repo id or an NGC name, downloaded by NeMo into its cache), or a local ``.nemo``
            file (``bundled:<name>``, a path, or a directory holding one ``.nemo`` file).
        options: See :class:`NemoASROptions`.
    """

    Options = NemoASROptions

    def __init__(self, model: str | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(model or DEFAULT_MODEL, options)
        import torch
        from nemo.collections.asr.models import ASRModel

        opts: NemoASROptions = self.options
        self.device = resolve_device(opts.device)
        self._model = load_nemo_model(ASRModel, self.model_spec, self.device)
        self._model.eval()
        self.sample_rate = asr_sample_rate(self._model)
        if "sample_rate" not in self._model.cfg:
            # transcribe() takes in-memory audio only from a model that states its rate.
            self._model.sample_rate = self.sample_rate
        self._autocast_dtype: Any = None
        dtype = getattr(torch, opts.compute_dtype)
        if self.device.startswith("cuda") and dtype != torch.float32:
            if opts.use_amp:
                self._autocast_dtype = dtype
            else:
                self._model.to(dtype)
        # One worker: transcribe() switches the model's mode and NeMo's global logging level
        # while it runs, and one call at a time on the device is what batching is for.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nemo-asr")
        # Counters are only written by the single worker thread.
        self._active = 0
        self._batches = 0
        self._utterances = 0
        self._largest_batch = 0
        self._last_batch_size = 0

    @property
    def max_batch_size(self) -> int:
        """Most utterances the deployment should group into one :meth:`transcribe_batch`."""
        return self.options.max_batch_size

    @property
    def batch_wait_timeout_s(self) -> float:
        """How long the deployment should wait to fill a batch."""
        return self.options.batch_wait_timeout_s

    async def transcribe(
        self, pcm16: bytes, sample_rate: int, language: str | None, options: DecodeOptions | None = None
    ) -> Transcript:
        """Transcribe one mono PCM16 utterance at any sample rate (a batch of one).

        Args:
            pcm16: The utterance, little-endian PCM16.
            sample_rate: Its sample rate; resampled to the model's rate when different.
            language: Passed through to the transcript: Parakeet v2 is English only, and
                multilingual NeMo models detect the language themselves.
            options: Accepted for the live engine; NeMo transcripts carry no word times
                here (the engine spreads the words over the audio), and every decode is a
                full one.
        """
        return (await self.transcribe_batch([(pcm16, sample_rate, language)]))[0]

    async def transcribe_batch(self, items: Sequence[Utterance]) -> list[Transcript]:
        """Transcribe several utterances with one ``model.transcribe`` call.

        Args:
            items: ``(pcm16, sample_rate, language)`` per utterance; rates may differ.

        Returns:
            One transcript per item, in the order of ``items``.
        """
        if not items:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transcribe_batch, list(items))

    def _transcribe_batch(self, items: list[Utterance]) -> list[Transcript]:
        started = time.perf_counter()
        audios = [self._model_audio(pcm16, rate) for pcm16, rate, _ in items]
        # Empty audio gets an empty transcript: NeMo cannot featurise zero samples.
        spoken = [i for i, audio in enumerate(audios) if audio.size]
        texts = [""] * len(items)
        if spoken:
            batch = [audios[i] for i in spoken]
            self._active += 1
            try:
                with self._precision():
                    output = self._model.transcribe(
                        batch,
                        batch_size=min(len(batch), self.options.max_batch_size),
                        return_hypotheses=False,
                        num_workers=0,  # the audio is in memory: worker processes only cost
                        verbose=False,
                    )
            finally:
                self._active -= 1
            results = hypothesis_texts(output)
            if len(results) != len(batch):
                raise RuntimeError(f"NeMo returned {len(results)} transcripts for {len(batch)} utterances")
            for index, text in zip(spoken, results, strict=True):
                texts[index] = text
            self._batches += 1
            self._utterances += len(batch)
            self._largest_batch = max(self._largest_batch, len(batch))
            self._last_batch_size = len(batch)
        elapsed = time.perf_counter() - started
        return [
            Transcript(
                text=text,
                language=language,
                audio_duration_s=len(pcm16) // 2 / rate,
                processing_s=elapsed,
            )
            for text, (pcm16, rate, language) in zip(texts, items, strict=True)
        ]

    def _model_audio(self, pcm16: bytes, sample_rate: int) -> Any:
        """PCM16 bytes -> float32 samples in [-1, 1) at the model's rate."""
        import numpy as np

        # An odd trailing byte cannot be a sample; drop it rather than fail the turn.
        audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if audio.size and sample_rate != self.sample_rate:
            import soxr

            # Resampled as float: going back to PCM16 first would add quantisation noise.
            audio = soxr.resample(audio, sample_rate, self.sample_rate).astype(np.float32, copy=False)
        return audio

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type="cuda", dtype=self._autocast_dtype)

    async def warmup(self) -> None:
        """Transcribe one second of silence (on CUDA this also builds the decoder's graphs)."""
        await self.transcribe(bytes(2 * self.sample_rate), self.sample_rate, None)

    def stats(self) -> dict[str, Any]:
        """Counters: ``batches`` (``model.transcribe`` calls), ``utterances`` (in them),
        ``largest_batch``, ``last_batch_size`` and ``active_batches`` (running now)."""
        return {
            "batches": self._batches,
            "utterances": self._utterances,
            "largest_batch": self._largest_batch,
            "last_batch_size": self._last_batch_size,
            "active_batches": self._active,
        }


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def nemo_source(spec: str) -> tuple[Literal["restore_from", "from_pretrained"], str]:
    """How a model spec is loaded: a local ``.nemo`` file, or a name NeMo downloads.

    Both ways end in the same place: ``from_pretrained`` downloads the model's ``.nemo``
    file into NeMo's cache and calls ``restore_from`` on it.

    Returns:
        ``("restore_from", path)`` for ``bundled:<name>``, a ``.nemo`` file or a directory
        holding one; ``("from_pretrained", name)`` for a Hugging Face repo id
        (``nvidia/parakeet-tdt-0.6b-v2``) or an NGC name (``stt_en_fastconformer_ctc_large``).
    """
    if is_local_spec(spec):
        return "restore_from", str(model_file(resolve_model(spec), "*.nemo"))
    return "from_pretrained", spec


def load_nemo_model(base_class: Any, spec: str, device: str) -> Any:
    """Load a NeMo model through ``base_class`` (e.g. ``ASRModel``, ``Vocoder``) onto ``device``.

    The base class reads the concrete model class from the checkpoint's config, so one call
    loads any model of that family.
    """
    import torch

    method, source = nemo_source(spec)
    return getattr(base_class, method)(source, map_location=torch.device(device))


def asr_sample_rate(model: Any) -> int:
    """The sample rate a NeMo ASR model's feature extractor expects (16 kHz for Parakeet)."""
    cfg = model.cfg
    rate = cfg.get("preprocessor", {}).get("sample_rate") or cfg.get("sample_rate")
    if not rate:
        raise ValueError("the NeMo model's config states no sample_rate")
    return int(rate)


def hypothesis_texts(output: Any) -> list[str]:
    """One text per utterance from what ``model.transcribe`` returned.

    NeMo 3.0 returns ``Hypothesis`` objects (text in ``.text``) from CTC, RNNT and TDT
    models even with ``return_hypotheses=False``; older RNNT models returned a tuple
    ``(best, all)``; multi-task models may return plain strings; beam search returns
    n-best lists (best first). Anything else is an error rather than a wrong transcript.
    """
    if isinstance(output, tuple):
        output = output[0]
    texts = []
    for item in output:
        best = item
        if isinstance(best, list):
            best = best[0] if best else ""
        if hasattr(best, "n_best_hypotheses"):
            best = best.n_best_hypotheses[0] if best.n_best_hypotheses else ""
        text = best if isinstance(best, str) else getattr(best, "text", None)
        if not isinstance(text, str):
            raise TypeError(f"unexpected NeMo transcription result: {type(item).__name__}")
        texts.append(text.strip())
    return texts
