"""One VAD model call for the audio of many sessions at once.

Every ``input_audio_buffer.append`` of every session needs the VAD, and at one model call
per 32 ms window per session the calls' fixed cost dominates an Ingress that carries many
sessions: Silero takes ~160 µs for one window and ~50 µs per window in a batch of 32 or
more (``python -m bench.vad_batch`` measures it on this machine). The
:class:`VADBatcher` collects the windows that sessions push during one turn of the event
loop and judges them together, so it adds no waiting of its own: with one session each
batch holds one window; under load the batches grow by themselves.

Batches run on the event loop itself. A worker thread looked attractive (onnxruntime
releases the GIL) but measured worse: every GIL hand-back between the loop and the thread
can wait out the interpreter's 5 ms switch interval, and at 50 sessions the receive loops
fell seconds behind real time.
"""

from __future__ import annotations

import asyncio

from serve_app.engine.audio.vad import SileroVAD, VADEvent, VADStream, run_windows


class VADBatcher:
    """Judges the pushed audio of all of a process's VAD streams in shared model calls.

    One batcher serves one event loop. A stream must be fed by one task at a time (a
    Session feeds its stream from its receive loop, one message after another).

    Args:
        vad: The model; its streams are the ones fed here.
    """

    def __init__(self, vad: SileroVAD) -> None:
        self._session = vad.session
        self._waiting: dict[VADStream, asyncio.Future[list[VADEvent]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # model rounds run, for tests and stats
        self.windows = 0

    async def feed(self, stream: VADStream, pcm16: bytes, sample_rate: int) -> list[VADEvent]:
        """Push audio into ``stream`` and return the events its whole windows decide.

        Args:
            stream: A stream of this batcher's model, not being fed by another task.
            pcm16: Mono PCM16 of any length.
            sample_rate: Its rate in Hz.

        Returns:
            The decided events, in order (empty when no window completed).
        """
        if not stream.push(pcm16, sample_rate):
            return []
        if stream in self._waiting:
            raise RuntimeError("a VAD stream was fed by two tasks at once")
        future: asyncio.Future[list[VADEvent]] = asyncio.get_running_loop().create_future()
        self._waiting[stream] = future
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="vad-batcher")
        # A session that goes away mid-wait cancels only its own future; the batch goes on.
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # one loop turn: let the other sessions' appends join
                batch, self._waiting = self._waiting, {}
                streams = list(batch)
                self.windows += sum(s.ready_windows for s in streams)
                try:
                    results = run_windows(self._session, streams)
                except Exception as exc:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                for future, events in zip(batch.values(), results, strict=True):
                    if not future.done():
                        future.set_result(events)
        finally:
            self._runner = None
