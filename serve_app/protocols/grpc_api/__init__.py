"""voxray's gRPC services, served through Ray Serve's gRPC ingress (``grpc_options``).

``SERVICER_FUNCTIONS`` is the ``grpc_options.grpc_servicer_functions`` list of every Serve
config (``configs/*.yaml``, the KubeRay manifests, the test servers): the services whose
methods the Ingress implements (``serve_app.protocols.grpc_api.servicer``).
"""

_PROTO = "serve_app.protocols.grpc_api.proto"

SERVICER_FUNCTIONS: tuple[str, ...] = (
    f"{_PROTO}.health_pb2_grpc.add_HealthServicer_to_server",
    f"{_PROTO}.riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server",
    f"{_PROTO}.riva_tts_pb2_grpc.add_RivaSpeechSynthesisServicer_to_server",
    f"{_PROTO}.voice_workflow_pb2_grpc.add_VoiceGatewayServicer_to_server",
    f"{_PROTO}.voxray_voice_pb2_grpc.add_VoxrayVoiceServicer_to_server",
)

DEFAULT_GRPC_PORT = 50051
"""Riva's port, where its clients (``--server localhost:50051``) look by default."""
