"""The plain server a user could write instead of ganserve: the grpc tutorial pattern.

    python -m bench.plain_server --model runs/bench-models/dcgan64/1/model.onnx [--threads 2]

A synchronous `grpc.server` on a thread pool; each `Sample` call makes its latents and runs one
ONNX Runtime call for itself (no batching, no queue); `SampleStream` runs one call per chunk.
One session shared by every thread (ONNX Runtime's `run` is thread-safe), spinning off as in
ganserve; `--device cuda` uses the CUDA execution provider (no IO binding: the plain way).
It speaks ganserve's own `Sample`/`SampleStream` messages (uint8 NHWC tensors, the same latent
contract), so the benchmark's client and bytes are the same for both servers. It prints
`gRPC on 127.0.0.1:PORT,` once it listens.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import onnxruntime as ort

from ganserve.export.metadata import ModelCard
from ganserve.latent import latents
from ganserve.server.runner import choose_providers
from ganserve.tensor import to_tensor
from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc


class PlainGenerator(pb_grpc.GeneratorServicer):
    """One ONNX Runtime call per request (per chunk for streams), on the caller's thread."""

    def __init__(self, model: str, threads: int, spinning: bool, device: str = "cpu") -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.log_severity_level = 3
        providers = choose_providers(device)
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.card = ModelCard.from_props(self.session.get_modelmeta().custom_metadata_map)
        self.output = self.session.get_outputs()[0].name

    def _batch(self, seed: int, start: int, count: int) -> pb.ImageBatch:
        z = latents(seed, start, count, self.card.latent_size)
        out = self.session.run([self.output], {"z": z})[0]
        return pb.ImageBatch(start_index=start, layout="NHWC", images=to_tensor(out))

    def Sample(self, request: pb.SampleRequest, context: Any) -> pb.ImageBatch:
        return self._batch(request.seed, request.start_index, request.count)

    def SampleStream(self, request: pb.SampleRequest, context: Any) -> Iterator[pb.ImageBatch]:
        chunk = request.chunk_size or 256
        for lo in range(0, request.count, chunk):
            yield self._batch(
                request.seed, request.start_index + lo, min(chunk, request.count - lo)
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="an unconditional generator's model.onnx")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--spinning", action="store_true", help="let idle intra-op threads spin")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--pool", type=int, default=10, help="gRPC handler threads (the tutorial: 10)")
    args = p.parse_args()
    server = grpc.server(
        futures.ThreadPoolExecutor(args.pool),
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)],
    )
    pb_grpc.add_GeneratorServicer_to_server(
        PlainGenerator(args.model, args.threads, args.spinning, args.device), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"gRPC on 127.0.0.1:{port},", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
