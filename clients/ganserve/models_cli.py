"""`ganserve models list|load|unload`: a server's model repository, over the Open Inference
Protocol's repository extension (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload).

    ganserve models list [--server HOST:PORT]
    ganserve models load NAME      # the server must run --model-control explicit
    ganserve models unload NAME
    ganserve models check MODEL[:VERSION]   # probe a version's file against its card
                                            # (exit 1 when out of margin: a deploy gate)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ganserve.channels import read_token
from ganserve.client import Client
from ganserve.errors import GanserveError

# the client's options (list, load, unload), each taking a value
_CLIENT_OPTIONS: dict[str, dict[str, Any]] = {
    "--server": {"default": "localhost:8500", "help": "host:port"},
    "--timeout": {"type": float, "default": 300.0, "help": "seconds (a load warms up)"},
    "--tls-ca": {"type": Path, "help": "PEM CA of the server's TLS certificate"},
    "--token-file": {"type": Path, "help": "a file holding the bearer token"},
}


def _action(argv: Sequence[str]) -> int:
    """The index in `argv` of its first positional argument (the action), skipping options
    and the values of those that take one; -1 when there is none."""
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
        elif token in _CLIENT_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return i
    return -1


def main(argv: Sequence[str]) -> int:
    """Run `ganserve models`: status 0 done, 1 the server refused, 2 a usage or setup error."""
    at = _action(argv)
    if at >= 0 and argv[at] == "check":  # runs the model here, so it needs the server's extra
        try:
            from ganserve.server.quality import check_main
        except ImportError as exc:
            print(f"ganserve models check: needs ganserve[serve] ({exc})", file=sys.stderr)
            return 2
        # the server options are left in: check_main refuses them (it runs no client)
        return check_main([*argv[:at], *argv[at + 1 :]])
    p = argparse.ArgumentParser(
        prog="ganserve models", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("action", choices=("list", "load", "unload", "check"))  # check: above
    p.add_argument("name", nargs="?", help="the model (load and unload)")
    for flag, options in _CLIENT_OPTIONS.items():
        p.add_argument(flag, **options)
    args = p.parse_args(argv)
    if args.action != "list" and not args.name:
        p.error(f"{args.action}: name the model")
    try:
        token = read_token(args.token_file)
        client = Client(args.server, tls=args.tls_ca or False, token=token, timeout=args.timeout)
    except GanserveError as exc:
        print(f"ganserve models: {exc}", file=sys.stderr)
        return 2
    with client:
        try:
            if args.action == "load":
                client.load_model(args.name)
                print(f"loaded {args.name}")
            elif args.action == "unload":
                client.unload_model(args.name)
                print(f"unloaded {args.name}")
            index = client.repository_index()
        except GanserveError as exc:
            print(f"ganserve models {args.action}: {exc}", file=sys.stderr)
            return 1
    if args.action == "list":
        for model in index:
            reason = f"  ({model.reason})" if model.reason else ""
            print(f"{model.name:24} {model.version:>4}  {model.state}{reason}")
    return 0
