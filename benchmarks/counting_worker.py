"""The Celery app of benchmark workers: the product's own app, with the SQL
statements of each task counted (benchmarks/querycount.py).

Benchmark workers start as `celery -A benchmarks.counting_worker worker …`
(benchmarks/harness.py), so the instrumentation is wired here, on the
benchmark's side, and no product module imports benchmark code.
"""

from benchmarks import querycount
from newsroom.celery import app

querycount.connect()

__all__ = ["app"]
