#!/usr/bin/env sh
# Regenerates workload_pb2.py, workload_pb2.pyi and workload_pb2_grpc.py from workload.proto
# (dev time only; the generated modules are committed). Needs: pip install grpcio-tools
set -eu
cd "$(dirname "$0")/../../.."   # the python/ source root, so imports come out package-absolute
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
  tether/identity/_workload/workload.proto
