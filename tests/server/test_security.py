"""TLS, mutual TLS and bearer tokens, over real channels with certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

import ganserve
from ganserve.cli import main
from ganserve.server import healthcheck
from ganserve.server.config import ServerConfig, ServerConfigError
from ganserve.server.security import SecurityError, read_tokens
from tests.servers import CGAN, DCGAN, until

NO_RETRY = ganserve.RetryPolicy(max_attempts=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("ganserve test CA", ca_key, None, ca=True)
    files = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"ganserve {who}", key, (ca, ca_key))
        files[f"{who}.key"] = _pem_key(key)
        files[f"{who}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def tls_flags(pki: dict[str, Path]) -> dict[str, str]:
    return {"tls_cert": str(pki["server.crt"]), "tls_key": str(pki["server.key"])}


def test_tls_serves_a_client_that_trusts_the_ca_and_no_plaintext_one(
    make_server: Callable, pki: dict[str, Path]
) -> None:
    server = make_server(**tls_flags(pki))
    with ganserve.Client(server.address, tls=pki["ca"]) as client:
        assert client.sample(DCGAN, 3, seed=1).pixels.shape == (3, 32, 32, 1)
    with (
        ganserve.Client(server.address, timeout=5, retry=NO_RETRY) as plain,
        pytest.raises(ganserve.Unavailable),
    ):
        plain.sample(DCGAN, 1)


def test_a_list_of_tls_servers_on_one_host_is_one_balanced_channel_checked_against_that_host(
    make_server: Callable, pki: dict[str, Path]
) -> None:
    a, b = make_server(**tls_flags(pki)), make_server(**tls_flags(pki))
    with ganserve.Client([a.address, b.address], tls=pki["ca"]) as client:
        assert len(client.targets) == 1
        for _ in range(10):
            client.sample(DCGAN, 1)
    calls = [s.metric("ganserve_requests_total", model=DCGAN, method="Sample") for s in (a, b)]
    assert sum(calls) == 10 and min(calls) >= 2, calls


def test_mutual_tls_refuses_a_client_without_a_certificate(
    make_server: Callable, pki: dict[str, Path]
) -> None:
    server = make_server(**tls_flags(pki), tls_client_ca=str(pki["ca"]))
    with (
        ganserve.Client(server.address, tls=pki["ca"], timeout=5, retry=NO_RETRY) as anonymous,
        pytest.raises(ganserve.Unavailable),
    ):
        anonymous.sample(DCGAN, 1)
    credentials = grpc.ssl_channel_credentials(
        pki["ca"].read_bytes(), pki["client.key"].read_bytes(), pki["client.crt"].read_bytes()
    )
    with ganserve.Client(server.address, tls=credentials) as client:
        assert len(client.sample(DCGAN, 2)) == 2


def test_the_healthcheck_speaks_tls_and_mutual_tls_from_the_servers_environment(
    make_server: Callable, pki: dict[str, Path]
) -> None:
    env = {
        "GANSERVE_TLS_CERT": str(pki["server.crt"]),
        "GANSERVE_TLS_KEY": str(pki["server.key"]),
        "GANSERVE_HEALTHCHECK_CA": str(pki["ca"]),
    }
    tls = make_server(**tls_flags(pki))
    assert healthcheck.check(tls.address, environ=env)
    assert not healthcheck.check(tls.address, environ={})  # plaintext to a TLS port
    mutual = make_server(**tls_flags(pki), tls_client_ca=str(pki["ca"]))
    assert not healthcheck.check(mutual.address, environ=env)  # no client certificate
    assert healthcheck.check(mutual.address, environ={**env, "GANSERVE_TLS_CLIENT_CA": "ca"})


def test_tokens_are_required_everywhere_but_health(make_server: Callable, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# one per line\nfirst-token\n\nsecond-token\n")
    server = make_server(auth_token_file=str(tokens))
    for token in (None, "wrong", "first-token-but-longer"):
        with ganserve.Client(server.address, token=token, retry=NO_RETRY) as client:
            with pytest.raises(ganserve.Unauthenticated, match="bearer token"):
                client.sample(DCGAN, 1)
            with pytest.raises(ganserve.Unauthenticated):
                list(client.generate_stream(CGAN, 10, balanced=True))
    for token in ("first-token", "second-token"):
        with ganserve.Client(server.address, token=token) as client:
            assert len(client.sample(DCGAN, 2)) == 2
            assert len(list(client.generate_stream(CGAN, 10, balanced=True))) == 1
    health = health_pb2_grpc.HealthStub(server.channel)  # probes carry no token
    reply = health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refused = server.metric(
        "ganserve_requests_total", model="unknown", method="Sample", code="UNAUTHENTICATED"
    )
    assert refused == 3


def _accepted(address: str, token: str) -> bool:
    with ganserve.Client(address, token=token, retry=NO_RETRY) as client:
        try:
            client.sample(DCGAN, 1)
        except ganserve.Unauthenticated:
            return False
    return True


def test_tokens_rotate_without_a_restart(make_server: Callable, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    server = make_server(auth_token_file=str(tokens))
    assert _accepted(server.address, "old-token") and not _accepted(server.address, "new-token")
    (tmp_path / "next").write_text("old-token\nnew-token\n")
    (tmp_path / "next").replace(tokens)  # how secret mounts change: a new file, renamed
    until(lambda: _accepted(server.address, "new-token"), "taking the new token")
    assert _accepted(server.address, "old-token")
    tokens.write_text("new-token\n")
    until(lambda: not _accepted(server.address, "old-token"), "dropping the old token")
    tokens.write_text("")  # an unusable file keeps the tokens that were accepted
    time.sleep(1.5)
    assert _accepted(server.address, "new-token")


def test_bulk_commands_take_the_ca_and_the_token(
    make_server: Callable, pki: dict[str, Path], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("bulk-token\n")
    server = make_server(**tls_flags(pki), auth_token_file=str(tokens))
    args = ["generate", "--model", CGAN, "--count", "40", "--server", server.address, "--quiet"]
    secure = ["--tls-ca", str(pki["ca"]), "--token-file", str(tokens)]
    assert main([*args, "--out", str(tmp_path / "ds"), *secure]) == 0
    assert main(["verify", str(tmp_path / "ds")]) == 0
    missing = ["--token-file", str(tmp_path / "absent")]
    assert main([*args, "--out", str(tmp_path / "x"), "--tls-ca", str(pki["ca"]), *missing]) == 2


def test_tls_settings_must_come_in_pairs() -> None:
    with pytest.raises(ServerConfigError, match="give both"):
        ServerConfig(tls_cert="cert.pem")
    with pytest.raises(ServerConfigError, match="needs --tls-cert"):
        ServerConfig(tls_client_ca="ca.pem")


def test_the_token_file_format(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# header\n  # rotated 2026-12-01\n\n  spaced-token \t\nplain\n")
    assert read_tokens(str(tokens)) == [b"spaced-token", b"plain"]  # indented comments too
    for bad, words in (("two words\n", "line 1"), ("ok\ntoken-é\n", "line 2")):
        tokens.write_text(bad)
        with pytest.raises(SecurityError, match=words):
            read_tokens(str(tokens))
    tokens.write_bytes(b"good\n\xff\xfe\n")
    with pytest.raises(SecurityError, match="not UTF-8"):
        read_tokens(str(tokens))


def test_an_indented_comment_is_no_token_and_a_non_utf8_file_keeps_the_old_tokens(
    make_server: Callable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("  # rotated 2026-12-01\nthe-token\n")
    server = make_server(auth_token_file=str(tokens))
    assert not _accepted(server.address, "# rotated 2026-12-01")
    assert _accepted(server.address, "the-token")
    caplog.set_level("WARNING", logger="ganserve.security")
    tokens.write_bytes(b"the-token\n\xff\xfe broken\n")  # once: every call UNKNOWN
    # the file is looked at when calls come, once a second
    until(
        lambda: _accepted(server.address, "the-token") and "not UTF-8" in caplog.text,
        "logging the unreadable token file",
    )
