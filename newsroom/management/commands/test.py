"""`manage.py test` runs the pytest suite; every argument goes to pytest.

The suite uses pytest-django (fixtures, `django_assert_num_queries`) rather
than Django's unittest runner, so this replaces Django's `test` command. The
embedded test Redis is started and stopped by a session fixture
(tests/conftest.py), so a plain `pytest` run gets it the same way.
"""

import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the test suite with pytest (arguments are passed to pytest)."

    def run_from_argv(self, argv: list[str]) -> None:
        import pytest

        code = pytest.main(argv[2:])
        # pytest exits 5 when it collected nothing: that is a failure for a CI.
        sys.exit(1 if code == pytest.ExitCode.NO_TESTS_COLLECTED else int(code))
