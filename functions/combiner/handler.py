"""Combiner Lambda: sums a ready round's results and steps the optimizer; also the watchdog.

A thin adapter: the logic lives in lambdatrain's runtime packages, shipped beside this file (what
the zip holds: components/archive.py). torch and numpy live on the EFS mount (see
lambdatrain/roles/packages.py), so the mount's package folder goes on the path here, but nothing
imports them at init: the watchdog fires every few minutes, before setup has installed them too,
and needs neither (lambdatrain/roles/edge.py imports the combine path on its first combine). A
combine pays the import in its first invocation instead, which Lambda would do anyway for an init
over its 10 s limit (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html).
"""

import os

from lambdatrain.roles.packages import add_packages_to_path

add_packages_to_path(os.environ)

from lambdatrain.roles.edge import handle  # noqa: E402  torch-free: the combine path loads on demand


def handler(event, context):
    return handle("combiner", event, context)
