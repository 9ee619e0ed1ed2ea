"""NVIDIA Riva's gRPC services on voxray's models (the protos are in ``grpc_api.proto``)."""
