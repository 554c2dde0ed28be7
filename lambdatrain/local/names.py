"""The local stack's fixed names and credentials, apart from the stack itself (which imports moto),
so the operator's commands can default to them without importing a server."""

from __future__ import annotations

REGION = "us-east-1"
TABLE = "lambdatrain-local"
BUCKET = "lambdatrain-local"
# moto checks no signature; boto3 still wants a key pair to sign with.
ACCESS_KEY = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
