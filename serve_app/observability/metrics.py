"""voxray's Prometheus metrics: one catalogue, recorded through Ray's metrics export.

Every metric is recorded in the Ingress replica, which sees each turn end to end: the model
stages are timed as the Ingress waits for them, so a stage's figure includes the Serve hop
and any queueing in front of its replicas (what a user waits for). Ray exports them on each
node's metrics port (``ray start --metrics-export-port``; 8080 in the KubeRay manifests) with
the prefix ``ray_``, counters with the suffix ``_total``, next to Ray's and Serve's own.

Labels are kept low-cardinality on purpose: the stage's deployment, its backend and model
(both fixed by the config), an outcome or reason from a fixed set. Never a session id.

Outside a Ray worker (unit tests), the same calls record into an in-memory
:class:`MemoryRecorder`, which tests read back.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["histogram", "counter", "gauge"]

LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
FAST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
STAGE_TAGS = ("deployment", "backend", "model")


@dataclass(frozen=True)
class MetricSpec:
    """One metric voxray exports.

    Attributes:
        name: Name as recorded; Prometheus sees ``ray_<name>`` (plus ``_total`` for counters).
        kind: ``histogram``, ``counter`` or ``gauge``.
        description: Help text, also the README's metric list.
        tags: Label names (Ray adds its own: ``WorkerId``, ``NodeAddress``, ``SessionName``...).
        buckets: Histogram bucket bounds.
    """

    name: str
    kind: Kind
    description: str
    tags: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def exported_name(self) -> str:
        """The Prometheus series name (a histogram's buckets add ``_bucket``, ``_count``, ``_sum``)."""
        return f"ray_{self.name}_total" if self.kind == "counter" else f"ray_{self.name}"


CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec(
        "voxray_voice_response_latency_seconds",
        "histogram",
        "End of the user's speech to the first reply audio sent (server VAD turns), by wire protocol.",
        ("protocol",),
        LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "voxray_endpointing_wait_seconds",
        "histogram",
        "End of the user's speech to the server VAD deciding the turn ended.",
        (),
        LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "voxray_asr_latency_seconds",
        "histogram",
        "One transcription, from the Ingress's call to its transcript.",
        (*STAGE_TAGS, "outcome"),
        LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "voxray_llm_time_to_first_token_seconds",
        "histogram",
        "From the Ingress's chat call to the first streamed text delta.",
        STAGE_TAGS,
        LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "voxray_llm_tokens_per_second",
        "histogram",
        "Streamed deltas per second after the first one (a delta is one token for vLLM and llama.cpp).",
        STAGE_TAGS,
        RATE_BUCKETS,
    ),
    MetricSpec(
        "voxray_tts_time_to_first_chunk_seconds",
        "histogram",
        "From the Ingress's synthesize call to the phrase's first audio chunk.",
        STAGE_TAGS,
        LATENCY_BUCKETS_S,
    ),
    MetricSpec(
        "voxray_tts_real_time_factor",
        "histogram",
        "Seconds waited for a phrase's audio per second of that audio (below 1: faster than real time).",
        STAGE_TAGS,
        RTF_BUCKETS,
    ),
    MetricSpec(
        "voxray_barge_in_stop_latency_seconds",
        "histogram",
        "User speech detected during a reply to that reply's cancelled response.done sent.",
        (),
        FAST_BUCKETS_S,
    ),
    MetricSpec(
        "voxray_sessions_active",
        "gauge",
        "Live sessions on this Ingress replica, by wire protocol.",
        ("replica", "protocol"),
    ),
    MetricSpec("voxray_sessions_opened", "counter", "Sessions admitted, by wire protocol.", ("protocol",)),
    MetricSpec(
        "voxray_turns",
        "counter",
        "Assistant turns (responses the client saw), by outcome (completed, cancelled, failed) and protocol.",
        ("outcome", "protocol"),
    ),
    MetricSpec(
        "voxray_responses_cancelled",
        "counter",
        "Responses cancelled, by reason (turn_detected: barge-in; client_cancelled) and protocol.",
        ("reason", "protocol"),
    ),
    MetricSpec(
        "voxray_errors",
        "counter",
        "Errors sent to clients, by type, code and wire protocol.",
        ("type", "code", "protocol"),
    ),
    MetricSpec(
        "voxray_connections_rejected",
        "counter",
        "WebSocket handshakes refused before a session started, by reason (the error code) and protocol.",
        ("reason", "protocol"),
    ),
)

SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}


class MemoryRecorder:
    """Keeps every recorded value in memory: what unit tests read back.

    ``values[name]`` lists ``(tags, value)`` pairs in recording order; a gauge's last pair per
    tag set is its value.
    """

    def __init__(self) -> None:
        self.values: defaultdict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)

    def record(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        """Keep one observation, increment or gauge setting."""
        self.values[spec.name].append((dict(tags), value))

    def total(self, name: str, **tags: str) -> float:
        """Sum of a counter's increments whose tags include ``tags``."""
        return sum(v for t, v in self.values[name] if tags.items() <= t.items())

    def observed(self, name: str, **tags: str) -> list[float]:
        """A histogram's observations whose tags include ``tags``."""
        return [v for t, v in self.values[name] if tags.items() <= t.items()]


class RayRecorder:
    """Records through ``ray.util.metrics``; each metric object is made on first use."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()

    def record(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        """Observe (histogram), increment (counter) or set (gauge) ``spec`` by ``value``."""
        metric = self._metrics.get(spec.name) or self._make(spec)
        if spec.kind == "histogram":
            metric.observe(value, tags=tags)
        elif spec.kind == "counter":
            metric.inc(value, tags=tags)
        else:
            metric.set(value, tags=tags)

    def _make(self, spec: MetricSpec) -> Any:
        from ray.util import metrics

        with self._lock:
            if spec.name not in self._metrics:
                if spec.kind == "histogram":
                    made: Any = metrics.Histogram(spec.name, spec.description, list(spec.buckets), spec.tags)
                elif spec.kind == "counter":
                    made = metrics.Counter(spec.name, spec.description, spec.tags)
                else:
                    made = metrics.Gauge(spec.name, spec.description, spec.tags)
                self._metrics[spec.name] = made
            return self._metrics[spec.name]


_recorder: MemoryRecorder | RayRecorder | None = None


def recorder() -> MemoryRecorder | RayRecorder:
    """This process's recorder: Ray's export inside a Ray worker, else in memory."""
    global _recorder
    if _recorder is None:
        import ray

        _recorder = RayRecorder() if ray.is_initialized() else MemoryRecorder()
    return _recorder


def use_recorder(new: MemoryRecorder | RayRecorder | None) -> None:
    """Replace this process's recorder (tests); ``None`` picks again on next use."""
    global _recorder
    _recorder = new


def record(name: str, value: float, **tags: str) -> None:
    """Record ``value`` for the catalogue's metric ``name`` with exactly its label names.

    Raises:
        KeyError: ``name`` is not in the catalogue.
        ValueError: ``tags`` are not the metric's label names (a mistake in voxray, caught by tests).
    """
    spec = SPECS[name]
    if set(tags) != set(spec.tags):
        raise ValueError(f"{name} takes labels {spec.tags}, got {sorted(tags)}")
    recorder().record(spec, float(value), tags)


def count(name: str, **tags: str) -> None:
    """Increment the counter ``name`` by one."""
    record(name, 1.0, **tags)


@dataclass(frozen=True)
class StageLabels:
    """Labels of one model stage: its deployment, backend and model (``-`` when unnamed).

    Args:
        deployment: ``ASR``, ``LLM`` or ``TTS``.
        backend: The config's backend name.
        model: The config's model spec, or ``-`` for the backend's default.
    """

    deployment: str
    backend: str
    model: str

    @classmethod
    def of(cls, deployment: str, config: Any) -> StageLabels:
        """Labels for a ``BackendConfig`` (``asr``, ``llm`` or ``tts`` of the AppConfig)."""
        return cls(deployment, str(config.backend), str(config.model or "-"))

    def tags(self) -> dict[str, str]:
        """As metric tags."""
        return {"deployment": self.deployment, "backend": self.backend, "model": self.model}


@dataclass(frozen=True)
class PipelineLabels:
    """The three model stages' labels, built once per Ingress from its config."""

    asr: StageLabels
    llm: StageLabels
    tts: StageLabels

    @classmethod
    def from_config(cls, config: Any) -> PipelineLabels:
        """From an ``AppConfig``."""
        asr, llm, tts = (
            StageLabels.of(name, getattr(config, name.lower())) for name in ("ASR", "LLM", "TTS")
        )
        return cls(asr, llm, tts)
