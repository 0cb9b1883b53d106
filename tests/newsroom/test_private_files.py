"""Data and secrets in the data folder are the service user's alone."""

import os
import stat
import subprocess
import sys
from pathlib import Path

from newsroom.private_files import private_file, private_folder, tighten
from tests.settings_helpers import process_env

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_files_and_folders_are_created_with_their_final_mode(tmp_path):
    old = os.umask(0)  # the most permissive umask: the modes must not depend on it
    try:
        folder = private_folder(tmp_path / "data" / "deeper")
        assert private_file(folder / "key", "s3cret") is True
        assert private_file(folder / "key", "other") is False  # never overwritten
    finally:
        os.umask(old)
    assert mode(folder) == 0o700
    assert mode(folder / "key") == 0o600
    assert (folder / "key").read_text() == "s3cret"


def test_tighten_narrows_what_an_older_release_left_open(tmp_path):
    loose = tmp_path / "db"
    loose.write_text("")
    loose.chmod(0o644)
    tighten(loose, 0o600)
    assert mode(loose) == 0o600
    tighten(tmp_path / "missing", 0o600)  # nothing to do, no error


def test_settings_write_nothing_and_start_up_makes_the_data_folder_private(tmp_path, monkeypatch):
    """Reading settings.py creates no file; the start-up step makes the data
    folder 0700 and the SQLite file 0600 before SQLite opens it."""
    import runpy
    from types import SimpleNamespace

    from newsroom.private_files import data_folder_prepare
    from tests.newsroom.test_settings import SETTINGS_FILE

    data = tmp_path / "fresh"
    monkeypatch.setenv("NEWSROOM_DATA_DIR", str(data))
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)  # a local site's generated key
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SITE_URL", "http://localhost:8000")
    monkeypatch.setenv("DEFAULT_FROM_EMAIL", "news@example.com")
    conf = runpy.run_path(SETTINGS_FILE)
    assert not data.exists()
    old = os.umask(0)
    try:
        data_folder_prepare(SimpleNamespace(**conf))
    finally:
        os.umask(old)
    assert mode(data) == 0o700
    assert Path(conf["DATABASES"]["default"]["NAME"]) == data / "newsroom.sqlite3"
    assert mode(data / "newsroom.sqlite3") == 0o600
    assert mode(data / "secret_key") == 0o600
    assert conf["SECRET_KEY"] == (data / "secret_key").read_text().strip()
    assert (data / "static").is_dir()


def test_runall_keeps_secrets_private_and_off_the_command_line(tmp_path):
    """The quick start's secret key, Flower login and its config are 0600 in a 0700
    folder, and the printed Flower command names a config file, not the password."""
    data = tmp_path / "var"
    data.mkdir()
    data.chmod(0o755)  # as an older release made it
    result = subprocess.run(
        [sys.executable, "manage.py", "runall", "--print-procfile"], cwd=ROOT,
        env=process_env(NEWSROOM_DATA_DIR=str(data), NEWSROOM_NO_BOOTSTRAP="1"),
        capture_output=True, text=True, timeout=120, umask=0,
    )
    assert result.returncode == 0, result.stderr
    password = (data / "flower-credentials").read_text().strip().split(":", 1)[1]
    assert password and password not in result.stdout
    [flower] = [line for line in result.stdout.splitlines() if line.startswith("flower:")]
    assert f"--conf={data / 'flower-config.py'}" in flower and "basic-auth" not in flower
    for name in ("secret_key", "flower-credentials", "flower-config.py"):
        assert mode(data / name) == 0o600, name
    assert mode(data) == 0o755  # --print-procfile only prints; runall proper tightens


def test_the_flower_config_gives_flower_the_login(tmp_path):
    """Flower parses the file with tornado: the option it sets is the stored login."""
    (tmp_path / "flower-credentials").write_text("ops:pw-123\n")
    from newsroom.management.commands.runall import FLOWER_CONFIG

    (tmp_path / "flower-config.py").write_text(FLOWER_CONFIG)
    from tornado.options import OptionParser

    parser = OptionParser()
    parser.define("basic_auth", type=str, multiple=True)
    parser.parse_config_file(str(tmp_path / "flower-config.py"))
    assert parser.basic_auth == ["ops:pw-123"]


def test_runall_tightens_a_data_folder_an_older_release_left_open(tmp_path, settings):
    from newsroom.management.commands.runall import data_folder_tighten

    settings.DATA_DIR = tmp_path
    tmp_path.chmod(0o755)
    for name in ("newsroom.sqlite3", "secret_key", "outbox-note"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o644)
    data_folder_tighten()
    assert mode(tmp_path) == 0o700
    assert mode(tmp_path / "newsroom.sqlite3") == mode(tmp_path / "secret_key") == 0o600
    assert mode(tmp_path / "outbox-note") == 0o644  # not ours to judge; the folder hides it
