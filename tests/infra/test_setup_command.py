"""The setupCommand stack output: an asynchronous invoke of the starter with a setup event it accepts."""

from __future__ import annotations

import json
import shlex

from lambdatrain.roles.setup import parse_setup


def test_setup_command_invokes_the_starter_asynchronously(plan):
    words = shlex.split(plan.outputs["setupCommand"])
    assert words[:3] == ["aws", "lambda", "invoke"]
    assert words[words.index("--function-name") + 1] == f"lambdatrain-{plan.stack}-starter"
    # Event: Lambda queues it and answers at once; a synchronous setup outlived the CLI's read timeout.
    assert words[words.index("--invocation-type") + 1] == "Event"
    parse_setup(json.loads(words[words.index("--payload") + 1]))  # raises if the starter would refuse it
