"""How the clients reach servers: channel topology, TLS, and the bearer token.

Balancing is gRPC's own `round_robin` policy: give one target that resolves to every replica
(`dns:///ganserve-headless.ns.svc.cluster.local:8500`, or `ipv4:10.0.0.1:8500,10.0.0.2:8500`)
and each call goes to the next ready backend, one that goes away is dropped, and a retry lands
on another. A list of IP `host:port` addresses becomes one such `ipv4:`/`ipv6:` target. Only
what one gRPC channel cannot hold (several DNS names, which gRPC Python cannot resolve into one
channel) gets a channel each, and then each attempt takes the next channel.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from ganserve.errors import InvalidArgument

ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
Tls = bool | str | Path | grpc.ChannelCredentials
Metadata = tuple[tuple[str, str], ...] | None


def addresses(address: str | Sequence[str]) -> list[str]:
    """The addresses a client was given, as a list; InvalidArgument for none or a non-string."""
    found = [address] if isinstance(address, str) else list(address)
    if not found or not all(isinstance(a, str) and a for a in found):
        raise InvalidArgument("address: give 'host:port' or a list of them")
    return found


def _ip_literal(address: str) -> tuple[str, str] | None:
    """("ipv4" or "ipv6", the host) for an IP `host:port` (`[v6]:port`), else None."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if ip.version == 6 and not host.startswith("["):
        return None
    return f"ipv{ip.version}", str(ip)


def targets(addresses: list[str], tls: bool) -> list[tuple[str, str | None]]:
    """The fewest gRPC channel targets that reach `addresses`, each with the authority its
    TLS check needs (None: gRPC's default). IP `host:port` addresses of one family join one
    `ipv4:a,b` (`ipv6:`) target that `round_robin` balances; under TLS only when they share
    one host, since every backend of a channel is verified against the same name. Anything
    else (a DNS name, a `dns:///` or other scheme target) is a channel of its own."""
    if len(addresses) == 1:
        return [(addresses[0], None)]
    families: dict[str, list[str]] = {}
    hosts: dict[str, set[str]] = {}
    alone: list[tuple[str, str | None]] = []
    for address in addresses:
        literal = _ip_literal(address)
        if literal is None:
            alone.append((address, None))
            continue
        families.setdefault(literal[0], []).append(address)
        hosts.setdefault(literal[0], set()).add(literal[1])
    joined: list[tuple[str, str | None]] = []
    for family, members in families.items():
        if tls and len(hosts[family]) > 1:
            alone += [(a, None) for a in members]
        elif len(members) == 1:
            joined.append((members[0], None))
        else:
            # gRPC names such a channel after the whole list: TLS is checked against the one
            # host the members share (plaintext needs no authority, and may mix hosts)
            authority = None
            if len(hosts[family]) == 1:
                (host,) = hosts[family]
                authority = f"[{host}]" if family == "ipv6" else host
            joined.append((f"{family}:{','.join(members)}", authority))
    return joined + alone


def credentials(tls: Tls) -> grpc.ChannelCredentials | None:
    """True: TLS against the system's CAs; a path: TLS against that PEM CA; credentials as
    they are (a client certificate for mutual TLS: `grpc.ssl_channel_credentials(ca, key,
    cert)`); False: plaintext."""
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, str | Path):
        try:
            return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())
        except OSError as exc:
            raise InvalidArgument(f"tls: cannot read the CA file {tls} ({exc.strerror})") from None
    return tls or None


def read_token(path: str | Path | None, flag: str = "--token-file") -> str | None:
    """The bearer token held in the file at `path` (surrounding whitespace dropped), None for
    no file; InvalidArgument naming `flag` when it cannot be read."""
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise InvalidArgument(f"{flag}: cannot read {path} ({exc.strerror})") from None


def token_metadata(token: str | None) -> Metadata:
    """The call metadata that carries a bearer token (servers run --auth-token-file)."""
    return (("authorization", f"Bearer {token}"),) if token else None


def open_channels(
    addresses: list[str], tls: Tls, max_message_bytes: int, *, aio: bool
) -> tuple[list[tuple[str, str | None]], list[Any]]:
    """(the targets, one open channel each) for `addresses`: `grpc.aio` channels when `aio`."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # gRPC's own balancing within one address: a target that resolves to several
        # backends (dns:///a-headless-service:8500, ipv4:10.0.0.1:8500,10.0.0.2:8500)
        # spreads its calls over all of them, and drops those that go away
        ("grpc.service_config", ROUND_ROBIN),
    ]
    secure = credentials(tls)
    module = grpc.aio if aio else grpc
    found = targets(addresses, secure is not None)
    channels = []
    for target, authority in found:
        extra = [("grpc.default_authority", authority)] if authority else []
        channels.append(
            module.secure_channel(target, secure, options + extra)
            if secure
            else module.insecure_channel(target, options + extra)
        )
    return found, channels
