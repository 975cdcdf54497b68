"""A small certificate authority for the fleet's broker: CA (``authority``), broker and client
certificates (``leaf``), PEM pairs (``pem``). Needs the ``cryptography`` package (extra ``security``)."""

from __future__ import annotations

from edgefleet.security.tls.authority import create_ca
from edgefleet.security.tls.leaf import issue_client, issue_server
from edgefleet.security.tls.pem import Issued

__all__ = ["Issued", "create_ca", "issue_client", "issue_server"]
