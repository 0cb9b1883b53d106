"""Celery tasks of the newsroom app: autodiscovery imports this module.

Tasks living in sub-packages are imported here so that workers register them.
"""

from newsroom.ops.canary import canary
from newsroom.ops.tasks import ops_sample

__all__ = ["canary", "ops_sample"]
