"""Run the Pulumi program offline under Pulumi's mocks and print every resource it declares.

    python -m components.plan dev|prod [--json]

No Pulumi CLI and no AWS: ``build`` loads ``Pulumi.<stack>.yaml`` into the runtime's config, runs
``__main__.py`` exactly as ``pulumi up`` would, answers each resource registration with fake
outputs, and records type, name, inputs, parent, ``protect``, ``delete_before_replace`` and
``depends_on`` of every resource, and the data-source calls it makes.
tests/infra use the same ``build``; this module's ``main`` prints the result as a tree.

Public Pulumi APIs only, as in pulumi/examples' testing-unit-py: ``set_mocks`` with a ``Mocks``
subclass (which sees each resource's inputs as sent), ``pulumi.runtime.test`` to run the program
to completion, and a stack transformation (which sees each resource's options) for parent,
``protect`` and ``depends_on``.
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
    depends_on: list[str]  # URNs of the resources in its depends_on (not those its inputs imply)
    inputs: dict = field(repr=False)
    delete_before_replace: bool = False


@dataclass
class Plan:
    stack: str
    resources: list[Record]
    outputs: dict
    calls: list[tuple[str, dict]] = field(default_factory=list)  # (data source token, its arguments)

    def of_type(self, type_: str) -> list[Record]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Record:
        (found,) = [r for r in self.of_type(type_) if r.name == name]
        return found

    def functions(self) -> dict[str, Record]:
        """Logical name (starter/worker/combiner) -> the Lambda function's record."""
        return {r.name.removeprefix("functions-"): r for r in self.of_type("aws:lambda/function:Function")}

    def policies(self) -> dict[str, list[dict]]:
        """IAM inline policy name -> its statements, parsed."""
        policies = self.of_type("aws:iam/rolePolicy:RolePolicy")
        return {r.name: json.loads(r.inputs["policy"])["Statement"] for r in policies}


class FakeCloud(pulumi.runtime.Mocks):
    """Answers resource registrations and data-source calls the way AWS would, minus AWS."""

    def __init__(self, region: str):
        self.region = region
        self.inputs: dict[tuple[str, str], dict] = {}  # (type, name) -> inputs as sent
        self.calls: list[tuple[str, dict]] = []
        # The Region's zones as DescribeAvailabilityZones lists them for an account that opted into a
        # Local Zone: listed first, so a program that does not filter on opt-in status picks it.
        self.zones = [(f"{region}-bos-1a", "opted-in")] + [(f"{region}{z}", "opt-in-not-required") for z in "abcdef"]

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.inputs[args.typ, args.name] = args.inputs
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
        self.calls.append((args.token, dict(args.args)))
        wanted = {f["name"]: f["values"] for f in args.args.get("filters") or []}
        zones = [name for name, status in self.zones if status in wanted.get("opt-in-status", [status])]
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


class OptionsRecorder:
    """A stack transformation that notes each resource's options; ``records`` resolves them to URNs."""

    def __init__(self) -> None:
        self.seen: list[tuple[pulumi.ResourceTransformationArgs, bool]] = []  # with its protect
        self._protect: dict[int, bool] = {}  # id(resource) -> protect, for children that inherit it

    def __call__(self, args: pulumi.ResourceTransformationArgs) -> None:
        opts, parent = args.opts, args.opts.parent
        # Unset protect is inherited from the parent, as pulumi.Resource does after transformations.
        protect = opts.protect if opts.protect is not None else self._protect.get(id(parent), False)
        self._protect[id(args.resource)] = bool(protect)
        self.seen.append((args, bool(protect)))
        return None  # the resource is left as declared

    def records(self, inputs: dict[tuple[str, str], dict]) -> pulumi.Output[list[Record]]:
        def record(args: pulumi.ResourceTransformationArgs, protect: bool) -> pulumi.Output[Record]:
            resource = args.resource
            parent = (args.opts.parent or pulumi.runtime.get_root_resource()).urn
            depends_on = args.opts.depends_on or []
            depends_on = [depends_on] if isinstance(depends_on, pulumi.Resource) else depends_on
            return pulumi.Output.all(resource.urn, parent, *[d.urn for d in depends_on]).apply(
                lambda urns: Record(
                    type=args.type_, name=args.name, urn=urns[0], parent=urns[1],
                    custom=isinstance(resource, pulumi.CustomResource), protect=protect,
                    depends_on=list(urns[2:]), inputs=inputs.get((args.type_, args.name), {}),
                    delete_before_replace=bool(args.opts.delete_before_replace),
                )
            )

        return pulumi.Output.all(*[record(*seen) for seen in self.seen])


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
    pulumi.runtime.reset_options()  # drops the last build's root stack, so set_mocks makes this stack's
    pulumi.runtime.set_mocks(cloud, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(config)
    root = pulumi.runtime.get_root_resource()
    recorder = OptionsRecorder()
    # A transformation, not the newer register_stack_transform: the SDK runs transformations itself,
    # while transforms go through the monitor, and the mock monitor does not run them.
    pulumi.runtime.register_stack_transformation(recorder)
    found: dict = {}

    @pulumi.runtime.test
    def run() -> pulumi.Output:
        runpy.run_path(str(PROGRAM), run_name="__main__")
        exports = pulumi.Output.from_input(dict(root.outputs))
        return pulumi.Output.all(exports, recorder.records(cloud.inputs)).apply(
            lambda done: found.update(outputs=done[0] or {}, resources=done[1])
        )

    run()
    resources = found["resources"]
    missed = set(cloud.inputs) - {(r.type, r.name) for r in resources}
    if missed:  # registered later than the program's own run, e.g. inside an apply: not recorded
        raise RuntimeError(f"resources registered without their options recorded: {sorted(missed)}")
    return Plan(stack=stack, resources=resources, outputs=found["outputs"], calls=cloud.calls)


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
            mark += "  [delete-first]" if record.delete_before_replace else ""
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
