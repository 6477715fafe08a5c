"""The SPIFFE Workload API protobuf (vendored ``workload.proto``) and its generated modules.

Generated with grpcio-tools by ``regenerate.sh``; do not edit the ``*_pb2*`` files by hand.
"""

# A private package of generated modules: nothing is re-exported from here.
__all__: list[str] = []
