"""Live transcription: partial and final words with times and speakers, protocol-neutral.

:class:`serve_app.engine.live.session.LiveTranscription` is the engine of a transcription
session (Speechmatics RT at ``/v2``, OpenAI Realtime transcription sessions); it publishes the
engine events of :mod:`serve_app.engine.events` and never builds a wire message.
"""
