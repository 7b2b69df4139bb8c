"""Server configuration: flags with GANSERVE_* environment equivalents, resolved once, frozen."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ganserve.contract import MAX_CHUNK_SIZE
from ganserve.server import tracing
from ganserve.server.logs import LOG_FORMATS

DEVICES = ("auto", "cpu", "cuda")
MODEL_CONTROLS = ("none", "poll", "explicit")  # Triton's --model-control-mode


class ServerConfigError(ValueError):
    """A setting out of range; the message names the flag."""


@dataclass(frozen=True)
class ServerConfig:
    """Every knob of a server. Per-model `config.json` files may override the batching ones."""

    model_repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = 8500  # gRPC; 0 picks a free port
    metrics_port: int = 8501  # Prometheus /metrics over HTTP; 0 picks a free port, -1 = off
    device: str = "auto"  # auto = CUDA when onnxruntime has it, else CPU
    instances: int = 0  # execution instances per model version; 0 = by device and cores
    intra_op_threads: int = 0  # ONNX Runtime threads per instance; 0 = by device and cores
    intra_op_spinning: bool = False  # let idle intra-op threads spin (CPU; measured: slower)
    solo_session: bool = True  # CPU: a batch that runs alone uses a session with every core
    workers: int = 1  # server processes sharing the gRPC port (SO_REUSEPORT)
    reuse_port: bool = False  # let other processes bind the same gRPC port (what --workers does)
    max_batch_size: int = 64  # images per ONNX Runtime run
    max_queue_delay_ms: float = 0.0  # under load, a batch may wait this long to fill
    inline_run_us: float = 500.0  # batch sizes that run faster than this run on the event loop
    max_queue_size: int = 4096  # images waiting per model; beyond: RESOURCE_EXHAUSTED
    max_images_per_call: int = 4096  # unary calls; streams have no limit
    max_pending_rpcs: int = 65536  # calls gRPC holds before the service takes them (see docs)
    max_message_bytes: int = 64 * 1024 * 1024  # gRPC send and receive limit
    max_translation_pixels: int = 16 * 1024 * 1024  # N x H x W of one translation call's output
    stream_chunk_size: int = 256  # images per streamed message by default
    tls_cert: str = ""  # PEM certificate chain: serve TLS (with --tls-key)
    tls_key: str = ""  # PEM private key of --tls-cert
    tls_client_ca: str = ""  # PEM CA: demand client certificates it signed (mutual TLS)
    auth_token_file: str = ""  # accepted bearer tokens, one per line; "" = no authentication
    grace_seconds: float = 10.0  # SIGTERM: in-flight calls get this long to finish
    model_control: str = "none"  # none: read once; poll: rescan; explicit: load/unload rpcs
    poll_seconds: float = 5.0  # --model-control poll: how often the repository is rescanned
    load_models: str = "*"  # the models loaded at start: "*" (all) or comma-separated names
    log_level: str = "INFO"
    log_format: str = "plain"  # plain text, or json: one object per line (server.logs)
    quality_probe_seconds: float = 0.0  # probe each generator version this often; 0 = off
    quality_judge: Path = Path("judges/judge.onnx")  # the ONNX judge the probe scores with

    def __post_init__(self) -> None:
        for name, least in _MINIMUM.items():
            if getattr(self, name) < least:
                raise ServerConfigError(f"--{_flag(name)}: must be at least {least}")
        for name, most in _MAXIMUM.items():
            if getattr(self, name) > most:
                raise ServerConfigError(f"--{_flag(name)}: {getattr(self, name)}; at most {most}")
        if self.model_control not in MODEL_CONTROLS:
            raise ServerConfigError(
                f"--model-control: {self.model_control!r}; one of {', '.join(MODEL_CONTROLS)}"
            )
        if self.load_models != "*" and self.model_control != "explicit":
            raise ServerConfigError("--load-models: only with --model-control explicit")
        if self.quality_probe_seconds:
            from ganserve.server.quality import reference_path  # numpy: only when probing

            judge = Path(self.quality_judge)
            for needed in (judge, reference_path(judge)):
                if not needed.is_file():
                    raise ServerConfigError(
                        f"--quality-judge: {needed} is missing (--quality-probe-seconds needs "
                        "it; `python -m ganserve.export.judge` makes it)"
                    )
        if self.log_format not in LOG_FORMATS:
            raise ServerConfigError(
                f"--log-format: {self.log_format!r}; one of {', '.join(LOG_FORMATS)}"
            )
        if self.device not in DEVICES:
            raise ServerConfigError(f"--device: {self.device!r}; one of {', '.join(DEVICES)}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ServerConfigError("--tls-cert, --tls-key: give both, or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ServerConfigError("--tls-client-ca: needs --tls-cert and --tls-key")
        if not 0 <= self.port < 65536 or not -1 <= self.metrics_port < 65536:
            raise ServerConfigError("--port / --metrics-port: 0-65535 (metrics: -1 = off)")


# the smallest value of each numeric setting (0 for instances and threads means "choose")
_MINIMUM = {
    **dict.fromkeys(
        (
            "max_batch_size",
            "max_queue_size",
            "max_images_per_call",
            "max_pending_rpcs",
            "max_message_bytes",
            "max_translation_pixels",
            "stream_chunk_size",
            "workers",
        ),
        1,
    ),
    **dict.fromkeys(
        ("max_queue_delay_ms", "inline_run_us", "grace_seconds", "instances", "intra_op_threads"),
        0,
    ),
    "poll_seconds": 0.1,
    "quality_probe_seconds": 0,
}


# the largest value of a setting, where the wire or a contract bounds it
_MAXIMUM = {"stream_chunk_size": MAX_CHUNK_SIZE}  # a stream's message holds at most this many


def _flag(name: str) -> str:
    return name.replace("_", "-")


def boolean(text: str) -> bool:
    """A yes/no setting's text: 1, true, yes, on or 0, false, no, off (any case)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r}: use true or false")


def _kind(default: object) -> Callable[[str], object]:
    """How a setting's text is parsed: as its default's type (Path for paths, yes/no for bools)."""
    if isinstance(default, bool):
        return boolean
    return Path if isinstance(default, Path) else type(default)


def env_name(name: str) -> str:
    """The environment variable of a setting: GANSERVE_MAX_BATCH_SIZE for max_batch_size."""
    return "GANSERVE_" + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field; the default comes from the environment, then from ServerConfig."""
    help_of = {
        "model_repository": "folder of <name>/<version>/model.onnx",
        "port": "gRPC port (0: any free one)",
        "metrics_port": "Prometheus port (0: any free one; -1: off)",
        "device": "auto, cpu or cuda",
        "instances": "execution instances per model (0: one per core on CPU, 2 on CUDA)",
        "intra_op_threads": "ONNX Runtime threads per instance (0: the cores shared out)",
        "intra_op_spinning": "true: idle ONNX Runtime threads spin (CPU)",
        "solo_session": "CPU: a batch that runs while no other does uses all the cores",
        "workers": "server processes sharing the gRPC port, each with its own models",
        "reuse_port": "true: share the gRPC port with other processes (SO_REUSEPORT)",
        "max_batch_size": "images per ONNX Runtime run",
        "max_queue_delay_ms": "under load only: how long a batch may wait to fill",
        "inline_run_us": "batch sizes that run faster run on the event loop (0: never)",
        "max_queue_size": "images queued per model before RESOURCE_EXHAUSTED",
        "max_images_per_call": "images one unary call may ask for",
        "max_pending_rpcs": "calls arrived but not yet taken by the service; beyond: CANCELLED",
        "max_message_bytes": "largest gRPC message, in and out",
        "max_translation_pixels": "N x H x W limit of one translation call",
        "stream_chunk_size": "images per streamed message by default",
        "grace_seconds": "how long SIGTERM lets in-flight calls finish",
        "tls_cert": "PEM certificate chain: serve TLS (with --tls-key)",
        "tls_key": "PEM private key for --tls-cert",
        "tls_client_ca": "PEM CA: require client certificates it signed (mutual TLS)",
        "auth_token_file": "file of accepted bearer tokens, one per line (health stays open)",
        "model_control": "none (read the repository once), poll (rescan it), explicit (load/"
        "unload rpcs and `ganserve models`)",
        "poll_seconds": "--model-control poll: seconds between rescans of the repository",
        "load_models": "--model-control explicit: models loaded at start ('*' all, or a,b)",
        "log_format": "plain, or json (one object per line, with trace ids when tracing)",
        "quality_probe_seconds": "probe every generator version's quality this often (0: off)",
        "quality_judge": "the ONNX judge of the quality probe (its .reference.npz beside it)",
    }
    for f in fields(ServerConfig):
        default = f.default
        parser.add_argument(
            f"--{_flag(f.name)}",
            type=_kind(default),
            metavar="BOOL" if isinstance(default, bool) else None,
            default=None,
            help=f"{help_of.get(f.name, f.name)} (env {env_name(f.name)}, default {default})",
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Flags beat environment variables, which beat the defaults."""
    environ = dict(os.environ if environ is None else environ)
    values = {}
    for f in fields(ServerConfig):
        given = getattr(args, f.name, None)
        if given is None and env_name(f.name) in environ:
            try:
                given = _kind(f.default)(environ[env_name(f.name)])
            except ValueError as exc:
                raise ServerConfigError(f"{env_name(f.name)}: {exc}") from exc
        if given is not None:
            values[f.name] = given
    return ServerConfig(**values)


def from_environment(environ: Mapping[str, str]) -> ServerConfig:
    """The config the GANSERVE_* variables of `environ` give, with no flags (what the
    container's healthcheck reads)."""
    return resolve(argparse.Namespace(), dict(environ))


def parse(argv: Sequence[str] | None = None) -> ServerConfig:
    """The config for `ganserve serve` from a command line and the environment."""
    parser = argparse.ArgumentParser(prog="ganserve serve")
    add_arguments(parser)
    try:
        config = resolve(parser.parse_args(argv))
        tracing.settings(os.environ)  # OTEL_* values ganserve cannot honour fail here too
    except (ServerConfigError, ValueError) as exc:  # one line naming the setting, exit status 2
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return config
