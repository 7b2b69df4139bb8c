"""The ganserve gRPC service: models from the repository, dynamic batching, ONNX Runtime.

Imported as `ganserve.server` (it lives in server/, the SDK's `ganserve` in clients/ganserve/);
needs the `serve` extra. Run `python -m ganserve.server --help` or `ganserve serve --help`.
"""
