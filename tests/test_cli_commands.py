"""``musicfn_cli.main.COMMANDS`` (the command -> module table ``main`` uses to import only the
chosen command's module) matches what each command module registers."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from musicfn_cli.main import COMMAND_MODULES, COMMANDS


def test_command_table_matches_the_modules() -> None:
    for name in COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(name).register(sub)
        assert set(sub.choices) == {cmd for cmd, mod in COMMANDS.items() if mod == name}, name
    assert set(COMMANDS.values()) == set(COMMAND_MODULES)


def test_a_command_imports_only_its_module() -> None:
    code = ("import sys; from musicfn_cli.main import main\n"
            "try:\n    main(['-v', 'run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('musicfn_cli.commands.', "
            "'functions.', 'scipy', 'engines.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()[-1]
    assert "musicfn_cli.commands.run_cmd" in out
    for heavy in ("audio_cmds", "engine_cmds", "'scipy'", "functions.analysis"):
        assert heavy not in out, out
