"""Servers shared by the serve-tier tests that need voxray as production runs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.grpc_harness import wait_serving
from tests.serve.haproxy_server import HAProxyServer, haproxy_server

# Scripted fake models (deployments/backends/fake.py): what each service does with its
# input is checked, not what a model makes of it.
GRPC_FAKE_ARGS = {
    "asr": {"backend": "fake", "options": {"transcripts": ["What is the capital of France?"]}},
    "llm": {"backend": "fake", "options": {"reply": "You said: {user} Here is my answer."}},
    "tts": {"backend": "fake"},
    "speaker": {"backend": "fake"},
}


@pytest.fixture(scope="package")
def grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HAProxyServer]:
    """voxray with fake models behind HAProxy, gRPC included, no API keys (loopback only).

    One for the serve tier (a cluster start costs about half a minute on 2 cores), stopped when
    the tier ends.
    """
    with haproxy_server(GRPC_FAKE_ARGS, Path(tmp_path_factory.mktemp("grpc-server"))) as running:
        wait_serving(running.grpc_target)
        yield running
