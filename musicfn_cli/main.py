"""The ``musicfn`` command line.

Command groups live in ``musicfn_cli.commands.*``; each module exposes ``register(subparsers)`` and
sets ``func`` on its parsers. ``main`` imports only the module of the command given (``COMMANDS``),
so ``musicfn run`` does not pay for the audio or engine imports; ``--help`` loads them all.
Any ``MusicfnError`` ends the command with one line on stderr and exit code 2 (1 for failures
that are not the caller's input); tracebacks are never shown.
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
    "musicfn_cli.commands.storage_cmds",
    "musicfn_cli.commands.run_cmd",
    "musicfn_cli.commands.audio_cmds",
    "musicfn_cli.commands.engine_cmds",
    "musicfn_cli.commands.client_cmds",
    "musicfn_cli.commands.events_cmds",
    "musicfn_cli.commands.doctor_cmd",
    "musicfn_cli.commands.verify_cmd",
)

# Which module registers each top-level command: ``main`` imports only that one.
COMMANDS: dict[str, str] = {
    **dict.fromkeys(("s3", "ls", "stats", "reindex", "cleanup"),
                    "musicfn_cli.commands.storage_cmds"),
    "run": "musicfn_cli.commands.run_cmd",
    **dict.fromkeys(("analyze", "normalize"), "musicfn_cli.commands.audio_cmds"),
    **dict.fromkeys(("make-tiny-model", "generate-local"), "musicfn_cli.commands.engine_cmds"),
    "generate": "musicfn_cli.commands.client_cmds",
    **dict.fromkeys(("watch", "process", "events"), "musicfn_cli.commands.events_cmds"),
    "doctor": "musicfn_cli.commands.doctor_cmd",
    "verify": "musicfn_cli.commands.verify_cmd",
}

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"musicfn: error: {message}\n")


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The parser with the command groups of ``modules`` (all of them by default)."""
    parser = _Parser(prog="musicfn", description="AI music functions on Ray Serve")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in modules:
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
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    module = COMMANDS.get(command or "")
    parser = build_parser((module,) if module else COMMAND_MODULES)
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
