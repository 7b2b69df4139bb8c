"""Export trained generators to ONNX for the server: `onnx_export`, `metadata` (the model card),
`repository` (versions) and `evaluate` (judge an ONNX file). Run `python -m ganserve.export --help`.

Imported as `ganserve.export` (it lives in export/, the SDK's `ganserve` in clients/ganserve/);
needs the `export` extra.
"""
