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
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict, named: str) -> None:
    with pytest.raises(ServerConfigError, match=named):
        resolve(parsed(argv), env)


def test_parse_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANSERVE_GRACE_SECONDS", "2")
    assert parse(["--port", "0"]).grace_seconds == 2.0
