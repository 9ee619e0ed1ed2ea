"""Serve's gRPC ingress reaches the Ingress: health, API keys and status codes.

Behind HAProxy as in production (``scripts/run.sh``): the gRPC port is HAProxy's, which hands
each call to an Ingress replica's own gRPC server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serve_app.protocols.grpc_api.proto import health_pb2, health_pb2_grpc, riva_tts_pb2, riva_tts_pb2_grpc
from tests.grpc_harness import SERVING, channel, health, wait_serving
from tests.serve.conftest import GRPC_FAKE_ARGS
from tests.serve.haproxy_server import HAProxyServer, haproxy_server

KEY = "grpc-test-key-0123456789"
REQUEST = riva_tts_pb2.RivaSynthesisConfigRequest()


def test_health_check_answers_serving_without_a_key(grpc_server: HAProxyServer) -> None:
    assert health(grpc_server.grpc_target) == SERVING


def test_health_check_of_any_service_name(grpc_server: HAProxyServer) -> None:
    with channel(grpc_server.grpc_target) as opened:
        stub = health_pb2_grpc.HealthStub(opened)
        for service in ("", "nvidia.riva.asr.RivaSpeechRecognition", "voice_workflow.VoiceGateway"):
            assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == SERVING


def test_health_watch_streams_the_status(grpc_server: HAProxyServer) -> None:
    with channel(grpc_server.grpc_target) as opened:
        stream = health_pb2_grpc.HealthStub(opened).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(stream).status == SERVING
        stream.cancel()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAProxyServer]:
    args = {**GRPC_FAKE_ARGS, "auth": {"api_keys": [KEY]}}
    with haproxy_server(args, Path(tmp_path_factory.mktemp("grpc-keyed"))) as running:
        wait_serving(running.grpc_target)
        yield running


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ((), "authorization: Bearer"),
        ((("authorization", "Bearer wrong-key"),), "Incorrect API key"),
        ((("authorization", f"Basic {KEY}"),), "authorization: Bearer"),
    ],
    ids=["no-key", "wrong-key", "not-bearer"],
)
def test_keyed_server_refuses_calls_without_a_valid_key(
    keyed_server: HAProxyServer, metadata: tuple[tuple[str, str], ...], needle: str
) -> None:
    with channel(keyed_server.grpc_target) as opened:
        stub = riva_tts_pb2_grpc.RivaSpeechSynthesisStub(opened)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetRivaSynthesisConfig(
                riva_tts_pb2.RivaSynthesisConfigRequest(), metadata=metadata, timeout=10
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert needle in refused.value.details()


def test_keyed_server_serves_a_call_with_the_key(keyed_server: HAProxyServer) -> None:
    with channel(keyed_server.grpc_target) as opened:
        stub = riva_tts_pb2_grpc.RivaSpeechSynthesisStub(opened)
        reply = stub.GetRivaSynthesisConfig(
            riva_tts_pb2.RivaSynthesisConfigRequest(),
            metadata=(("authorization", f"Bearer {KEY}"),),
            timeout=10,
        )
    assert reply.model_config, "the synthesis config lists at least the default voice"


def test_health_needs_no_key_on_a_keyed_server(keyed_server: HAProxyServer) -> None:
    assert health(keyed_server.grpc_target) == SERVING
