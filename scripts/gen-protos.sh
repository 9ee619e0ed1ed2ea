#!/usr/bin/env bash
# Regenerates the Python modules of voxray's gRPC contracts (serve_app/protocols/grpc_api/proto)
# from their .proto files. The generated *_pb2.py and *_pb2_grpc.py are committed, so serving
# and testing never need this; run it after editing a .proto. It installs grpcio-tools into
# ./.venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTO_DIR=serve_app/protocols/grpc_api/proto
.venv/bin/python -c "import grpc_tools" 2>/dev/null || .venv/bin/pip install -q "grpcio-tools==1.85.1"
.venv/bin/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. "$PROTO_DIR"/*.proto
echo "generated: $(ls "$PROTO_DIR"/*_pb2*.py | wc -l) modules in $PROTO_DIR"
