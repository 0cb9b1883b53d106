#!/usr/bin/env python3
"""Django's command-line utility, which also sets the project up on first use.

Run with any Python 3.11+ outside a virtualenv, it creates `.venv/`, installs
the project into it (with the test extras for `test`), and re-runs itself there,
so `python3 manage.py runall` and `python3 manage.py test` are the only two
commands a fresh machine needs. Inside any virtualenv it does nothing of the
sort: you manage that environment yourself.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"


def _bootstrap() -> None:
    if sys.prefix != sys.base_prefix or os.environ.get("NEWSROOM_NO_BOOTSTRAP"):
        return
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs under any python3
        sys.exit("Newsroom needs Python 3.11 or newer.")
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"Creating a virtualenv in {VENV} …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    extras = "dev" if sys.argv[1:2] == ["test"] else ""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".installed-{extras or 'base'}"
    if not stamp.exists() or stamp.read_text() != wanted:
        print("Installing Newsroom and its dependencies …", flush=True)
        target = f".[{extras}]" if extras else "."
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--editable", target],
            cwd=ROOT, check=True,
        )
        stamp.write_text(wanted)
        if extras:  # a test install covers the base one too
            (VENV / ".installed-base").write_text(
                hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
            )
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])  # noqa: S606


def main() -> None:
    _bootstrap()
    default = "tests.settings" if sys.argv[1:2] == ["test"] else "newsroom.settings"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", default)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
