"""Draining an Ingress replica without cutting its sessions.

Serve stops a replica gracefully when it scales down or a new version replaces it (a
``serve deploy`` or a RayService update): it routes no new requests there, waits while
requests are open (checking every ``graceful_shutdown_wait_loop_s``), and kills the replica
``graceful_shutdown_timeout_s`` after the stop began. A Realtime WebSocket is one open
request for its whole life, so a draining Ingress replica lingers while it has sessions.

voxray's policy on top of that (``ReplicaDrain``): once the drain starts, refuse new
sessions with 1012 (the client reconnects and lands on a live replica: the router may still
send a few here in the moment before it learns of the drain), let live sessions go on and
finish their turns, and end any still open ``DRAIN_CLOSE_MARGIN_S`` before Serve's deadline
with 1012 and an ``error`` event, so that clients see a clean close instead of a dropped TCP
connection. ``graceful_shutdown_timeout_s`` on the Ingress is therefore how long a session
may outlive its replica's retirement (README "Deploy on Kubernetes": the trade-off).

Behind HAProxy (``serve_app.server.serve_env``) two Serve defaults would cut sessions anyway, and
voxray changes both: the replica's HTTP server is shut down 30 s into the drain, which makes
uvicorn close every live WebSocket with 1012 (``keep_sessions_through_drain`` makes that
step close only the listening socket), and a reloaded-out HAProxy process, which carries the
connections made before the reload, is killed after ``hard-stop-after`` (raised in
``serve_env``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployments import ray_compat
from serve_app.server.limits import SERVICE_RESTART, CloseConnection

logger = logging.getLogger("voxray")

# Sessions still open this long before Serve's force-kill deadline are ended by voxray. It
# covers the sweep's period (1 s), the time the close handshake takes, and the delay
# between the controller starting the stop and the replica seeing it.
DRAIN_CLOSE_MARGIN_S = 5.0


def server_restarting() -> CloseConnection:
    """What a draining replica tells a client it will not (or no longer) serve: reconnect."""
    return CloseConnection(
        SERVICE_RESTART,
        "server_shutting_down",
        "This voxray server is restarting; reconnect to continue.",
        reason="server restarting; reconnect",
        error_type="server_error",
    )


@dataclass
class ReplicaDrain:
    """Whether this replica drains, and when its remaining sessions must end.

    Attributes:
        shutting_down: Tells whether Serve has begun stopping this replica.
        grace_s: The replica's ``graceful_shutdown_timeout_s``: Serve kills it this long
            after the stop began.
        started: When (``time.monotonic()``) the drain was first seen; ``None`` before.
    """

    shutting_down: Callable[[], bool]
    grace_s: float
    started: float | None = field(default=None)

    def draining(self, now: float) -> bool:
        """Whether the drain has begun; the first ``True`` records ``now`` as its start."""
        if self.started is None and self.shutting_down():
            self.started = now
            logger.info(
                "replica draining: refusing new sessions; live ones may go on for %.0f s",
                self.session_grace_s,
            )
        return self.started is not None

    @property
    def session_grace_s(self) -> float:
        """How long live sessions may go on once the drain has begun."""
        return max(0.0, self.grace_s - DRAIN_CLOSE_MARGIN_S)

    def sessions_must_end(self, now: float) -> bool:
        """Whether the sessions still open must be ended now, before Serve kills the replica."""
        return self.draining(now) and now - self.started >= self.session_grace_s  # type: ignore[operator]


def replica_drain() -> ReplicaDrain | None:
    """The drain of the Serve replica this runs in, or ``None`` where it cannot be watched.

    Serve has no public hook for the start of a graceful shutdown; this reads the replica's
    own ``_shutting_down`` flag and deployment config. Without them (outside a replica, or
    after Ray's internals change) sessions simply end when the replica is killed.
    """
    try:
        replica = ray_compat.current_replica()
        grace_s = ray_compat.replica_graceful_shutdown_s(replica)
        keep_sessions_through_drain(replica)
        return ReplicaDrain(lambda: ray_compat.replica_shutting_down(replica), grace_s)
    except Exception as exc:
        logger.warning("cannot watch for replica shutdown (%s); sessions end when it is killed", exc)
        return None


def keep_sessions_through_drain(replica: Any) -> None:
    """Make a draining replica stop accepting connections without closing the live ones.

    In HAProxy mode Serve ends the drain's deregistration window (30 s) by shutting down the
    replica's own HTTP server, "so stale routers retry elsewhere"; uvicorn's shutdown closes
    every open WebSocket with 1012, so sessions would end there whatever
    ``graceful_shutdown_timeout_s`` says. Closing only the listening sockets keeps that
    intent (late connections are refused and HAProxy retries them on another replica) while
    live sessions go on; Serve then waits for them as open requests and shuts the server
    down once they are gone.

    Args:
        replica: Serve's replica implementation (``ray.serve._private.replica``).
    """

    def stop_listening() -> None:
        for listener in ray_compat.direct_ingress_listeners(replica):
            listener.get_loop().call_soon_threadsafe(listener.close)  # stops accept(); conns stay
        logger.info("replica draining: HTTP listener closed; live sessions go on")

    if not ray_compat.replace_stop_accepting(replica, stop_listening):
        logger.warning("Serve's drain changed; live sessions may be closed 30 s into a drain")
