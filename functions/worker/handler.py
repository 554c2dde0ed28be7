"""Worker Lambda: one round of training on one data shard, result written to EFS and recorded.

A thin adapter: the logic lives in lambdatrain's runtime packages, shipped beside this file (what
the zip holds: components/archive.py). torch and numpy live on the EFS mount (see
lambdatrain/roles/packages.py), so the mount's package folder goes on the path before anything
imports them.
"""

import os

from lambdatrain.roles.packages import add_packages_to_path

add_packages_to_path(os.environ)

from lambdatrain.roles import worker  # noqa: E402,F401  init: torch loads before the first invocation's clock
from lambdatrain.roles.edge import handle  # noqa: E402  (needs the packages on the path)


def handler(event, context):
    return handle("worker", event, context)
