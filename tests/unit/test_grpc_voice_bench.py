"""The gRPC voice benchmark's arithmetic (``bench.grpc_voice`` through ``bench.protocols``)."""

from __future__ import annotations

from bench.protocols import difference_ms


def test_the_difference_of_medians_needs_both() -> None:
    assert difference_ms({"stream_audio": 612.4, "realtime": 605.1}, "stream_audio", "realtime") == 7.3
    assert difference_ms({"realtime": 605.1}, "stream_audio", "realtime") is None
