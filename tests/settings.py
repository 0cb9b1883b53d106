"""Settings for the test suite: the real settings, with a throw-away data folder.

The tests get their own data folder (and so their own embedded Redis and
SQLite file) so that a suite run never touches a running development service.
DATABASE_URL and REDIS_URL, when set, still point the suite at real servers.
"""

import os
from pathlib import Path

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-not-for-production")
os.environ.setdefault(
    "NEWSROOM_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test")
)
os.environ.setdefault("SITE_URL", "http://testserver")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
# news@testserver (the default sender for that SITE_URL) is no valid address.
os.environ.setdefault("DEFAULT_FROM_EMAIL", "Newsroom <news@newsroom.example>")
# http://testserver with DEBUG off counts as a public site: the embedded SQLite
# and Redis are what the suite wants, so say so.
os.environ.setdefault("NEWSROOM_EMBEDDED", "1")

from newsroom.settings import *  # noqa: F403
from newsroom.settings import CACHES

CACHES["default"]["KEY_PREFIX"] = "newsroom-test"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
STORAGES["staticfiles"]["BACKEND"] = (  # noqa: F405
    "django.contrib.staticfiles.storage.StaticFilesStorage"
)

# A file, not SQLite's in-memory default, so that a real Celery worker started
# by the tests (tests/conftest.py) sees the same test database.
DATABASES["default"].setdefault("TEST", {})  # noqa: F405
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"]["NAME"] = str(DATA_DIR / "test-db.sqlite3")  # noqa: F405
