"""The ganserve gRPC service: models from the repository, dynamic batching, ONNX Runtime."""
