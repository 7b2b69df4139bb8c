"""The ceiling of gRPC itself: ganserve's Sample rpc answered with a fixed image, no model.

    python -m bench.echo_server [--shape 32 32 1]

Prints `gRPC on 127.0.0.1:PORT,` like the real server; the benchmark calls it with the same
client and load to show what the Python gRPC stack alone costs on the machine. The reply holds
`count` images of `--shape` (uint8), so its bytes match the model's.
"""

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc


class Echo(pb_grpc.GeneratorServicer):
    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self.image_bytes = shape[0] * shape[1] * shape[2]
        self.replies: dict[int, pb.ImageBatch] = {}

    def _reply(self, n: int) -> pb.ImageBatch:
        if n not in self.replies:
            self.replies[n] = pb.ImageBatch(
                model="echo",
                layout="NHWC",
                images=pb.Tensor(
                    dtype="uint8", shape=[n, *self.shape], data=bytes(n * self.image_bytes)
                ),
            )
        return self.replies[n]

    async def Sample(self, request: pb.SampleRequest, context: Any) -> pb.ImageBatch:
        return self._reply(request.count or 1)

    async def SampleStream(
        self, request: pb.SampleRequest, context: Any
    ) -> AsyncIterator[pb.ImageBatch]:
        chunk = request.chunk_size or 256
        for lo in range(0, request.count, chunk):
            yield self._reply(min(chunk, request.count - lo))


async def main(shape: tuple[int, int, int]) -> None:
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
    pb_grpc.add_GeneratorServicer_to_server(Echo(shape), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"gRPC on 127.0.0.1:{port},", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=(32, 32, 1), metavar=("H", "W", "C"))
    asyncio.run(main(tuple(p.parse_args().shape)))
