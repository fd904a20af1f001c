"""CLI command groups. Each module exposes ``register(subparsers)``; see ``musicfn_cli.main``."""
