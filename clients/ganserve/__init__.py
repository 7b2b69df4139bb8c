"""ganserve: the Python SDK of the ganserve GAN inference service.

    import ganserve
    with ganserve.Client("localhost:8500") as client:
        client.generate("mnist-cgan", count=10, balanced=True, seed=7).save_pngs("digits/")

Installs with grpcio, protobuf and numpy alone (`pip install .`, no extras). `ganserve.latent`
is the latent contract the server uses too; `ganserve.v1` holds the generated gRPC code.

One import namespace, four folders (pyproject.toml's package-dir): `ganserve` and its SDK
modules live in clients/ganserve/, `ganserve.server` in server/, `ganserve.training` in
training/, `ganserve.export` in export/.
"""

from ganserve.client import AsyncClient, Client
from ganserve.errors import (
    Cancelled,
    DeadlineExceeded,
    FolderLocked,
    GanserveError,
    InvalidArgument,
    JobError,
    ManifestError,
    NotFound,
    Overloaded,
    ServerError,
    Unauthenticated,
    Unavailable,
    UnexpectedReply,
    WrongModelKind,
)
from ganserve.latent import latents
from ganserve.png import encode_png
from ganserve.retry import RetryPolicy
from ganserve.types import Images, ModelInfo, RepositoryModel, VersionState

__version__ = "0.1.0"
__all__ = [
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FolderLocked",
    "GanserveError",
    "Images",
    "InvalidArgument",
    "JobError",
    "ManifestError",
    "ModelInfo",
    "NotFound",
    "Overloaded",
    "RepositoryModel",
    "RetryPolicy",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedReply",
    "VersionState",
    "WrongModelKind",
    "__version__",
    "encode_png",
    "latents",
]
