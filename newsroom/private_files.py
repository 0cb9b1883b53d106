"""Files and folders in the data folder that only the service's user may read.

The data folder holds the SQLite database (every subscriber's address), the
generated secret key and Flower's login. Each is created with its final mode,
never written first and narrowed after, so there is no moment another local
user could read it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """Create `path` (and missing parents of it) as 0700; an existing one is left as is."""
    path = Path(path)
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    return path


def private_file(path: Path, text: str | None = None) -> bool:
    """Create `path` as 0600 (empty, or holding `text`) unless it exists; True if created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        if text is not None:
            file.write(text)
    return True


def tighten(path: Path, mode: int) -> None:
    """Narrow an existing file or folder to `mode` if others may read it (made by an
    older release); one owned by someone else is left to its owner."""
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    if status.st_mode & 0o077 and status.st_uid == os.getuid():
        path.chmod(mode)


def local_secret_key(data_dir: Path) -> str:
    """The signing key of a local (quick-start) site, generated once into
    `data_dir/secret_key`, so that `runall` and every other `manage.py` command
    sign and verify links with the same key without anyone exporting one.

    Written to a temporary file and linked into place, so two processes starting
    at once agree on one key and neither ever reads a half-written file.
    """
    path = private_folder(Path(data_dir)) / "secret_key"
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")  # 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(50))
            with contextlib.suppress(FileExistsError):  # someone else's came first: use it
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


def data_folder_prepare(settings: Any) -> None:
    """Make what the settings point at in the data folder, before first use: the
    folder (0700), the SQLite file (0600, before SQLite creates it with the umask's
    mode), the static folder (whitenoise warns without one) and a local site's
    generated secret key (so every command of the checkout finds it in place).

    A start-up step (`NewsroomConfig.ready`), so that reading the settings, which
    any tool may do, writes nothing.
    """
    private_folder(settings.DATA_DIR)
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = str(database["NAME"])
        if name not in {"", ":memory:"} and Path(name).parent.is_dir():
            private_file(Path(name))  # SQLite gives -wal/-shm the mode of this file
    Path(settings.STATIC_ROOT).mkdir(exist_ok=True)
    str(settings.SECRET_KEY)  # a local site's key: generated into the data folder if new
