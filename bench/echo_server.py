"""The ceiling of gRPC itself: ganserve's Sample rpc answered with a fixed image, no model.

`python -m bench.echo_server` prints `gRPC on 127.0.0.1:PORT,` like the real server; the
benchmark calls it with the same client to show what the Python gRPC stack alone costs.
"""

import asyncio
from typing import Any

import grpc

from ganserve.v1 import ganserve_pb2 as pb
from ganserve.v1 import ganserve_pb2_grpc as pb_grpc


class Echo(pb_grpc.GeneratorServicer):
    def __init__(self) -> None:
        self.reply = pb.ImageBatch(
            model="echo",
            layout="NHWC",
            images=pb.Tensor(dtype="uint8", shape=[1, 32, 32, 1], data=bytes(1024)),
        )

    async def Sample(self, request: pb.SampleRequest, context: Any) -> pb.ImageBatch:
        return self.reply


async def main() -> None:
    server = grpc.aio.server()
    pb_grpc.add_GeneratorServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"gRPC on 127.0.0.1:{port},", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
