"""The `ganserve` command: `serve` runs the server (needs the `serve` extra)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: ganserve COMMAND [ARGS]

commands:
  serve      run the gRPC server on a model repository (ganserve serve --help)
  generate   make a dataset of generated images, resumable (ganserve generate --help)
  translate  translate a folder of PNG images into another, resumable
  verify     check a dataset folder against its manifest
  merge      assemble the manifests of a job's workers (generate --workers N) into one
  models     list, load or unload a server's models (ganserve models --help)
  grid       a PNG grid of what a served generator makes (ganserve grid --help)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "serve":
        try:
            from ganserve.server.app import main as serve_main
        except ImportError as exc:
            print(
                f"ganserve serve needs the server: pip install 'ganserve[serve]' ({exc})",
                file=sys.stderr,
            )
            return 2
        return serve_main(rest)
    if command == "generate":
        from ganserve.bulk_cli import main_generate

        return main_generate(rest)
    if command == "translate":
        from ganserve.bulk_cli import main_translate

        return main_translate(rest)
    if command == "merge":
        from ganserve.bulk_cli import main_merge

        return main_merge(rest)
    if command == "verify":
        from ganserve.bulk_cli import main_verify

        return main_verify(rest)
    if command == "models":
        from ganserve.models_cli import main as models_main

        return models_main(rest)
    if command == "grid":
        from ganserve.grid import main as grid_main

        return grid_main(rest)
    print(f"ganserve: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
