"""CLI command groups. Each module exposes ``register(subparsers)``; see ``musicfn.cli``."""
