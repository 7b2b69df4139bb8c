"""Configuration: flags beat GANSERVE_* variables, which beat the defaults; bad values are named."""

import argparse
from pathlib import Path

import pytest

from ganserve.server.config import (
    ServerConfig,
    ServerConfigError,
    add_arguments,
    env_name,
    parse,
    resolve,
)


def parsed(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_beat_environment_which_beats_defaults() -> None:
    env = {
        "GANSERVE_MAX_BATCH_SIZE": "32",
        "GANSERVE_MODEL_REPOSITORY": "/srv/models",
        "GANSERVE_MAX_QUEUE_DELAY_MS": "5.5",
    }
    config = resolve(parsed(["--max-batch-size", "128"]), env)
    assert config.max_batch_size == 128  # flag
    assert config.model_repository == Path("/srv/models")  # environment
    assert config.max_queue_delay_ms == 5.5
    assert config.port == ServerConfig().port  # default
    assert env_name("max_batch_size") == "GANSERVE_MAX_BATCH_SIZE"
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--max-batch-size", "0"], {}, "--max-batch-size"),
        (["--device", "tpu"], {}, "--device"),
        ([], {"GANSERVE_PORT": "eighty"}, "GANSERVE_PORT"),
        (["--port", "70000"], {}, "--port"),
        # a default no stream could use: it started, then failed every stream (issue #23)
        (["--stream-chunk-size", "5000"], {}, "--stream-chunk-size: 5000; at most 4096"),
        ([], {"GANSERVE_STREAM_CHUNK_SIZE": "4097"}, "--stream-chunk-size"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict, named: str) -> None:
    with pytest.raises(ServerConfigError, match=named):
        resolve(parsed(argv), env)


def test_parse_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANSERVE_GRACE_SECONDS", "2")
    assert parse(["--port", "0"]).grace_seconds == 2.0


def test_the_largest_chunk_a_stream_takes_is_accepted_at_start() -> None:
    from ganserve.contract import MAX_CHUNK_SIZE

    config = resolve(parsed(["--stream-chunk-size", str(MAX_CHUNK_SIZE)]), {})
    assert config.stream_chunk_size == MAX_CHUNK_SIZE


def test_the_healthcheck_reads_the_servers_configuration(capsys: pytest.CaptureFixture) -> None:
    from ganserve.server import healthcheck

    # a configuration the server would refuse to start with is unhealthy, and says why
    bad = {"GANSERVE_TLS_CLIENT_CA": "ca.pem"}  # mutual TLS without a certificate
    assert not healthcheck.check("127.0.0.1:1", timeout=0.5, environ=bad)
    assert "--tls-client-ca" in capsys.readouterr().err


def test_serve_refuses_a_bad_setting_in_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--stream-chunk-size", "5000"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "ganserve serve: error: --stream-chunk-size: 5000; at most 4096\n"
    )
