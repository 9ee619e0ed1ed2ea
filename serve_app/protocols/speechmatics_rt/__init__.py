"""Speechmatics real-time transcription (RT) at ``/v2`` and ``/v2/<language>``."""
