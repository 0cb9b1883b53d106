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
    path = Path(data_dir) / "secret_key"
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
