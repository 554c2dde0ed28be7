"""Whether an endpoint URL points at this machine: the one loopback check.

Two decisions rest on it: the runtime honours fault injection only when every AWS endpoint is on
this machine (``roles.settings``), and an operator command that cannot connect asks whether
``lambdatrain local serve`` runs rather than blaming the network (``ops.target``). The first is a
safety gate, so the host is parsed, never searched for as a substring: ``https://127.0.0.1.example.com``
is a public name, not loopback.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOCALHOST = "localhost"


def is_loopback(url: str) -> bool:
    """True when ``url``'s host is ``localhost`` or a loopback address (all of 127.0.0.0/8, ``::1``)."""
    try:
        host = urlsplit(url).hostname  # lower-cased, IPv6 brackets removed
    except ValueError:  # e.g. an unclosed "[" in an IPv6 host: not a URL we can trust
        return False
    if not host:
        return False
    if host.rstrip(".") == LOCALHOST:  # "localhost." is the same name, fully qualified
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: resolving it here would prove nothing
        return False
