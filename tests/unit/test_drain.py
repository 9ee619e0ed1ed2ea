"""ReplicaDrain: when a draining Ingress replica refuses sessions and ends the live ones."""

from __future__ import annotations

from serve_app.server.drain import DRAIN_CLOSE_MARGIN_S, ReplicaDrain, replica_drain, server_restarting


class FakeShutdownFlag:
    """Stands in for Serve's replica ``_shutting_down`` flag."""

    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


def test_not_draining_until_serve_begins_the_stop() -> None:
    flag = FakeShutdownFlag()
    drain = ReplicaDrain(flag, grace_s=60)
    assert not drain.draining(100.0)
    assert not drain.sessions_must_end(10_000.0)  # no deadline without a drain
    assert drain.started is None


def test_live_sessions_may_go_on_until_the_margin_before_serves_deadline() -> None:
    flag = FakeShutdownFlag()
    drain = ReplicaDrain(flag, grace_s=60)
    flag.value = True
    assert drain.draining(100.0)
    assert drain.started == 100.0
    assert drain.draining(130.0) and drain.started == 100.0  # the first sighting counts
    end = 100.0 + 60 - DRAIN_CLOSE_MARGIN_S
    assert not drain.sessions_must_end(end - 0.5)
    assert drain.sessions_must_end(end)


def test_a_grace_shorter_than_the_margin_ends_sessions_at_once() -> None:
    flag = FakeShutdownFlag()
    flag.value = True
    drain = ReplicaDrain(flag, grace_s=2)
    assert drain.session_grace_s == 0
    assert drain.sessions_must_end(5.0)


def test_outside_a_serve_replica_there_is_no_drain_to_watch() -> None:
    assert replica_drain() is None


def test_refusals_and_endings_ask_the_client_to_reconnect() -> None:
    close = server_restarting()
    assert close.code == 1012
    assert close.error["error"]["code"] == "server_shutting_down"
    assert close.error["error"]["type"] == "server_error"
