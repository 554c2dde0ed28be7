"""The one loopback check: the URL's host is parsed, never searched for "127.0.0.1"."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from lambdatrain.ops.errors import Unreachable
from lambdatrain.ops.target import aws_errors
from lambdatrain.protocol.endpoints import is_loopback
from lambdatrain.protocol.errors import ConfigError
from lambdatrain.roles.settings import load


@pytest.mark.parametrize("url", [
    "http://localhost:9001",
    "http://LOCALHOST:9001/",
    "http://[::1]:9001",
    "http://127.0.0.1:5000",
    "http://127.0.0.2:1",  # all of 127.0.0.0/8 is loopback
])
def test_loopback_urls_are_recognised(url):
    assert is_loopback(url)


@pytest.mark.parametrize("url", [
    "https://127.0.0.1.example.com",  # contains "127.0.0.1", but is a public name
    "https://localhost.example.com",
    "https://dynamodb.us-east-1.amazonaws.com",
    "http://10.0.0.1:5000",
    "http://[::1",  # not a URL: urlsplit refuses it
    "127.0.0.1:5000",  # no scheme, so no host
    "",
])
def test_other_urls_are_not_loopback(url):
    assert not is_loopback(url)


def test_fault_injection_is_refused_behind_a_name_that_only_contains_127_0_0_1():
    with pytest.raises(ConfigError, match="LAMBDATRAIN_FAULTS"):
        load({"LAMBDATRAIN_TABLE": "t", "LAMBDATRAIN_FAULTS": "worker:before_write:1",
              "AWS_ENDPOINT_URL": "https://127.0.0.1.example.com"})
    assert load({"LAMBDATRAIN_TABLE": "t", "LAMBDATRAIN_FAULTS": "worker:before_write:1",
                 "AWS_ENDPOINT_URL": "http://[::1]:5000", "AWS_ENDPOINT_URL_LAMBDA": "http://127.0.0.2:9001"}).faults


@pytest.mark.parametrize("url, hint", [
    ("http://127.0.0.2:9", "is `lambdatrain local serve` running?"),
    ("https://127.0.0.1.example.com", "check the network and the region"),
])
def test_an_unreachable_endpoint_gets_the_hint_its_host_calls_for(url, hint):
    with pytest.raises(Unreachable, match=hint):
        with aws_errors():
            raise EndpointConnectionError(endpoint_url=url)
