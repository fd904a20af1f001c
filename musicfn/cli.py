"""The ``musicfn`` command line.

Command groups live in ``musicfn.commands.*``; each module exposes ``register(subparsers)`` and
sets ``func`` on its parsers. Any ``MusicfnError`` ends the command with one line on stderr and
exit code 2 (1 for failures that are not the caller's input); tracebacks are never shown.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from musicfn.errors import InputError, MusicfnError

# Each listed module registers its subcommands; modules that are not there yet are skipped.
COMMAND_MODULES = (
    "musicfn.commands.storage_cmds",
    "musicfn.commands.run_cmd",
    "musicfn.commands.audio_cmds",
    "musicfn.commands.engine_cmds",
    "musicfn.commands.client_cmds",
    "musicfn.commands.events_cmds",
    "musicfn.commands.doctor_cmd",
    "musicfn.commands.verify_cmd",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"musicfn: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every available command group registered."""
    parser = _Parser(prog="musicfn", description="AI music functions on Ray Serve")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``musicfn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.func
    try:
        return handler(args)
    except MusicfnError as exc:
        print(f"musicfn: error: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        print("musicfn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
