"""ganserve: the Python SDK of the ganserve GAN inference service.

Installs with grpcio, protobuf and numpy alone. `ganserve.latent` is the latent contract the
server uses too; `ganserve.v1` holds the generated gRPC code (`make protos`).
"""

__version__ = "0.1.0"
