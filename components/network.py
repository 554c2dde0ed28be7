"""Network: the VPC the functions and EFS live in (paper, section 5.C).

Public subnets hold only the NAT gateways; the Lambdas and the EFS mount targets sit in private
subnets. Gateway endpoints carry S3 and DynamoDB traffic without touching the NAT (and its per-GB
charge); the NAT is still needed for lambda:Invoke (the Lambda API has no gateway endpoint) and for
pip during the setup event. Two security groups: the functions' (no ingress, egress 443 anywhere
and 2049 to EFS) and EFS's (ingress 2049 from the functions' group only, no egress). The subnets
go into the Region's own AZs (those that need no opt-in), or into the zones the stack names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

NFS_PORT = 2049
HTTPS_PORT = 443
ANYWHERE = "0.0.0.0/0"


@dataclass
class NetworkArgs:
    cidr: str
    az_count: int
    nat_per_az: bool
    tags: dict[str, str]
    zones: tuple[str, ...] | None = None  # explicit zones (az_count of them); None: looked up


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    private_subnets: list[aws.ec2.Subnet]
    public_subnets: list[aws.ec2.Subnet]
    functions_sg: aws.ec2.SecurityGroup
    efs_sg: aws.ec2.SecurityGroup

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("lambdatrain:network:Network", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,  # EFS mount targets are found through DNS
            enable_dns_support=True,
            tags=self._tags(f"{name}-vpc"),
            opts=child,
        )
        self.zone_names = list(args.zones) if args.zones else self._default_zones()
        self._create_subnets()
        public_rt = self._create_public_routes()
        self.private_route_tables = self._create_private_routes()
        self._create_endpoints()
        self._create_security_groups()
        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "private_subnet_ids": [s.id for s in self.private_subnets],
                "public_route_table_id": public_rt.id,
                "functions_sg_id": self.functions_sg.id,
                "efs_sg_id": self.efs_sg.id,
            }
        )

    def _default_zones(self) -> list[pulumi.Output[str]]:
        # "available" alone also lists Local Zones and Wavelength Zones an account opted into, where
        # EFS mount targets and NAT gateways may not exist; opt-in-not-required keeps the Region's
        # own AZs (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeAvailabilityZones.html).
        zones = aws.get_availability_zones_output(
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        return [zones.names.apply(lambda names, i=i: names[i]) for i in range(self._args.az_count)]

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name}

    def _create_subnets(self) -> None:
        private, public = subnet_cidrs(self._args.cidr, self._args.az_count)
        self.private_subnets, self.public_subnets = [], []
        for i, zone in enumerate(self.zone_names):
            pairs = (("private", private[i], self.private_subnets), ("public", public[i], self.public_subnets))
            for kind, cidr, into in pairs:
                subnet_name = f"{self._name}-{kind}-{i}"
                into.append(
                    aws.ec2.Subnet(
                        subnet_name,
                        vpc_id=self.vpc.id,
                        cidr_block=cidr,
                        availability_zone=zone,
                        map_public_ip_on_launch=False,
                        tags={**self._tags(subnet_name), "tier": kind},
                        opts=pulumi.ResourceOptions(parent=self),
                    )
                )

    def _create_public_routes(self) -> aws.ec2.RouteTable:
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=self._tags(f"{name}-igw"), opts=child
        )
        table = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=self.vpc.id, tags=self._tags(f"{name}-public-rt"), opts=child
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=table.id, destination_cidr_block=ANYWHERE, gateway_id=igw.id, opts=child,
        )
        for i, subnet in enumerate(self.public_subnets):
            aws.ec2.RouteTableAssociation(
                f"{name}-public-rta-{i}", subnet_id=subnet.id, route_table_id=table.id, opts=child
            )
        nat_count = self._args.az_count if self._args.nat_per_az else 1
        self.nat_gateways = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(
                f"{name}-nat-eip-{i}", domain="vpc", tags=self._tags(f"{name}-nat-eip-{i}"), opts=child
            )
            self.nat_gateways.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    allocation_id=eip.id,
                    subnet_id=self.public_subnets[i].id,
                    tags=self._tags(f"{name}-nat-{i}"),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )
        return table

    def _create_private_routes(self) -> list[aws.ec2.RouteTable]:
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        tables = []
        for i, subnet in enumerate(self.private_subnets):
            table = aws.ec2.RouteTable(
                f"{name}-private-rt-{i}", vpc_id=self.vpc.id, tags=self._tags(f"{name}-private-rt-{i}"), opts=child
            )
            nat = self.nat_gateways[i % len(self.nat_gateways)]  # a shared NAT serves every AZ
            aws.ec2.Route(
                f"{name}-private-default-{i}",
                route_table_id=table.id, destination_cidr_block=ANYWHERE, nat_gateway_id=nat.id, opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-rta-{i}", subnet_id=subnet.id, route_table_id=table.id, opts=child
            )
            tables.append(table)
        return tables

    def _create_endpoints(self) -> None:
        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region
        for service in ("s3", "dynamodb"):
            aws.ec2.VpcEndpoint(
                f"{self._name}-{service}-endpoint",
                vpc_id=self.vpc.id,
                service_name=region.apply(lambda r, s=service: f"com.amazonaws.{r}.{s}"),
                vpc_endpoint_type="Gateway",
                route_table_ids=[t.id for t in self.private_route_tables],
                tags=self._tags(f"{self._name}-{service}-endpoint"),
                opts=pulumi.ResourceOptions(parent=self),
            )

    def _create_security_groups(self) -> None:
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        self.functions_sg = aws.ec2.SecurityGroup(
            f"{name}-functions-sg",
            vpc_id=self.vpc.id,
            description="lambdatrain functions: no ingress; HTTPS out, NFS to EFS",
            tags=self._tags(f"{name}-functions-sg"),
            opts=child,
        )
        self.efs_sg = aws.ec2.SecurityGroup(
            f"{name}-efs-sg",
            vpc_id=self.vpc.id,
            description="lambdatrain EFS: NFS from the functions only",
            tags=self._tags(f"{name}-efs-sg"),
            opts=child,
        )
        # Separate rule resources, not inline rules: the two groups refer to each other.
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-efs-nfs-in",
            security_group_id=self.efs_sg.id,
            referenced_security_group_id=self.functions_sg.id,
            ip_protocol="tcp", from_port=NFS_PORT, to_port=NFS_PORT,
            description="NFS from the lambdatrain functions",
            tags=self._tags(f"{name}-efs-nfs-in"),
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-functions-nfs-out",
            security_group_id=self.functions_sg.id,
            referenced_security_group_id=self.efs_sg.id,
            ip_protocol="tcp", from_port=NFS_PORT, to_port=NFS_PORT,
            description="NFS to the EFS mount targets",
            tags=self._tags(f"{name}-functions-nfs-out"),
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-functions-https-out",
            security_group_id=self.functions_sg.id,
            cidr_ipv4=ANYWHERE,
            ip_protocol="tcp", from_port=HTTPS_PORT, to_port=HTTPS_PORT,
            description="HTTPS to AWS APIs (S3/DynamoDB via gateway endpoints, Lambda via NAT) and PyPI",
            tags=self._tags(f"{name}-functions-https-out"),
            opts=child,
        )


def subnet_cidrs(vpc_cidr: str, az_count: int) -> tuple[list[str], list[str]]:
    """(private, public) CIDRs, one each per AZ: private from the bottom half, public from the top."""
    network = ipaddress.IPv4Network(vpc_cidr)
    blocks = list(network.subnets(new_prefix=network.prefixlen + 4))
    half = len(blocks) // 2
    private = [str(b) for b in blocks[:az_count]]
    public = [str(b) for b in blocks[half : half + az_count]]
    return private, public
