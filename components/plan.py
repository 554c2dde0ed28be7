"""Run the Pulumi program offline under Pulumi's mocks and print every resource it declares.

    python -m components.plan dev|prod [--json]

No Pulumi CLI and no AWS: ``build`` loads ``Pulumi.<stack>.yaml`` into the runtime's config, runs
``__main__.py`` exactly as ``pulumi up`` would, answers each resource registration with fake
outputs, and records type, name, inputs, parent, ``protect`` and dependencies of every resource.
tests/infra use the same ``build``; this module's ``main`` prints the result as a tree.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import runpy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.config import stack_config, stack_names

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "__main__.py"
PROJECT = "lambdatrain"
ACCOUNT = "123456789012"


@dataclass
class Record:
    """One resource as the program declared it (input property names as on the wire: camelCase)."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    protect: bool
    dependencies: list[str]
    inputs: dict = field(repr=False)


@dataclass
class Plan:
    stack: str
    resources: list[Record]
    outputs: dict

    def of_type(self, type_: str) -> list[Record]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Record:
        (found,) = [r for r in self.of_type(type_) if r.name == name]
        return found

    def by_urn(self, urn: str) -> Record:
        (found,) = [r for r in self.resources if r.urn == urn]
        return found

    def functions(self) -> dict[str, Record]:
        """Logical name (starter/worker/combiner) -> the Lambda function's record."""
        return {r.name.removeprefix("functions-"): r for r in self.of_type("aws:lambda/function:Function")}

    def policies(self) -> dict[str, list[dict]]:
        """IAM inline policy name -> its statements, parsed."""
        return {r.name: json.loads(r.inputs["policy"])["Statement"] for r in self.of_type("aws:iam/rolePolicy:RolePolicy")}


class FakeCloud(pulumi.runtime.Mocks):
    """Answers resource registrations and data-source calls the way AWS would, minus AWS."""

    def __init__(self, region: str):
        self.region = region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        return f"{args.name}-id", {**args.inputs, **self._computed(args.typ, args.name, args.inputs)}

    def _computed(self, type_: str, name: str, inputs: dict) -> dict:
        service = type_.split(":")[1].split("/")[0]
        physical = inputs.get("name") or f"{name}-1a2b3c"
        arn = f"arn:aws:{service}:{self.region}:{ACCOUNT}:{type_.rsplit(':', 1)[-1].lower()}/{physical}"
        out = {"arn": arn, "name": physical}
        if type_ == "aws:lambda/function:Function":
            out["arn"] = f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{physical}"
        elif type_ == "aws:s3/bucket:Bucket":
            out.update(bucket=inputs.get("bucket") or physical, arn=f"arn:aws:s3:::{physical}")
        elif type_ == "aws:dynamodb/table:Table":
            out["arn"] = f"arn:aws:dynamodb:{self.region}:{ACCOUNT}:table/{physical}"
            out["streamArn"] = f"{out['arn']}/stream/2025-01-01T00:00:00.000"
        elif type_ == "aws:cloudwatch/logGroup:LogGroup":
            out["arn"] = f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{physical}"
        elif type_ == "aws:sqs/queue:Queue":
            out["url"] = f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT}/{physical}"
            out["arn"] = f"arn:aws:sqs:{self.region}:{ACCOUNT}:{physical}"
        return out

    def call(self, args: pulumi.runtime.MockCallArgs):
        zones = [f"{self.region}{z}" for z in "abcdef"]
        answers = {
            "aws:index/getAvailabilityZones:getAvailabilityZones": {"names": zones, "id": self.region},
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/test", "id": ACCOUNT, "userId": "TEST",
            },
            "aws:index/getPartition:getPartition": {
                "partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws", "reverseDnsPrefix": "com.amazonaws",
            },
            "aws:index/getRegion:getRegion": {"region": self.region, "name": self.region, "id": self.region},
        }
        return answers.get(args.token, {}), []


class RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping each registration's options (parent, protect, depends_on)."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.records: list[Record] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.records.append(
                Record(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=request.custom,
                    protect=request.protect,
                    dependencies=list(request.dependencies),
                    inputs=rpc.deserialize_properties(request.object),
                )
            )
        return response


def is_taggable(type_: str) -> bool:
    """Whether the pulumi_aws resource class behind a type token takes ``tags``."""
    module_name, class_name = type_.split(":")[1].split("/")[0], type_.rsplit(":", 1)[1]
    module = importlib.import_module(f"pulumi_aws.{'lambda_' if module_name == 'lambda' else module_name}")
    return "tags" in inspect.signature(getattr(module, class_name)._internal_init).parameters


def build(stack: str, config: dict[str, str] | None = None) -> Plan:
    """Run the program for ``stack`` under mocks; ``config`` replaces the stack file's when given."""
    config = stack_config(stack) if config is None else config
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    cloud = FakeCloud(config.get("aws:region", "us-east-1"))
    monitor = RecordingMonitor(cloud)
    pulumi.runtime.set_mocks(cloud, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config)
    root = get_root_resource()
    root.outputs.clear()  # the mocks keep one root stack per process; drop the last build's exports
    outputs: dict = {}

    async def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__main__")
        outputs.update(await pulumi.Output.from_input(dict(root.outputs)).future() or {})

    _sync_await(run_pulumi_func(program))
    return Plan(stack=stack, resources=list(monitor.records), outputs=outputs)


def render(plan: Plan) -> str:
    """The resources as a tree by parent, each line ``type name`` (``[protected]`` where set)."""
    children: dict[str, list[Record]] = {}
    for record in plan.resources:
        children.setdefault(record.parent, []).append(record)
    known = {r.urn for r in plan.resources}
    lines = [f"stack {PROJECT}/{plan.stack}: {len(plan.resources)} resources"]

    def walk(parent: str, depth: int) -> None:
        for record in sorted(children.get(parent, []), key=lambda r: (r.type, r.name)):
            mark = "  [protected]" if record.protect else ""
            lines.append(f"{'  ' * depth}{record.type}  {record.name}{mark}")
            walk(record.urn, depth + 1)

    for top in sorted({r.parent for r in plan.resources if r.parent not in known}):
        walk(top, 1)
    lines.append("outputs:")
    lines += [f"  {key}: {plan.outputs[key]}" for key in sorted(plan.outputs)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.plan", description=__doc__.splitlines()[0])
    parser.add_argument("stack", choices=stack_names())
    parser.add_argument("--json", action="store_true", help="one JSON object per resource: type, name, parent")
    options = parser.parse_args(argv)
    plan = build(options.stack)
    if options.json:
        for record in plan.resources:
            fields = asdict(record)
            del fields["inputs"]
            print(json.dumps(fields))
    else:
        print(render(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
