"""A bundle in memory: every file ``edgefleet security init`` writes, with its content and whether it
is secret, plus the generated passwords. Building touches no file, so it can be tested and inspected
before anything is written."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgefleet.security.acl import render_acl
from edgefleet.security.bundle import layout
from edgefleet.security.bundle.broker_conf import render_broker_conf
from edgefleet.security.bundle.client_conf import render_client_toml
from edgefleet.security.bundle.options import BundleOptions
from edgefleet.security.dynsec.config import render_dynsec_config
from edgefleet.security.passwords import new_password, render_password_file
from edgefleet.security.plan import SecurityPlan


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the bundle directory, '/'-separated
    content: bytes
    secret: bool  # written readable by the owner only (0600), else 0644


@dataclass(frozen=True)
class Bundle:
    plan: SecurityPlan
    options: BundleOptions
    files: tuple[BundleFile, ...]
    passwords: Mapping[str, str]  # username -> password, in plan.principals() order

    def file(self, path: str) -> BundleFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)


def build_bundle(plan: SecurityPlan, options: BundleOptions, *,
                 password_for: Callable[[str], str] = lambda _name: new_password()) -> Bundle:
    """Generate passwords (and, with ``options.tls``, a CA and certificates) and render every file."""
    principals = plan.principals()
    passwords = {p.name: password_for(p.name) for p in principals}
    if options.dynamic:  # the plugin's file holds the password hashes and every role
        files = [BundleFile(layout.DYNSEC, render_dynsec_config(plan, passwords).encode(), secret=True)]
    else:
        files = [
            BundleFile(layout.PASSWD, render_password_file(passwords).encode(), secret=True),
            BundleFile(layout.ACL, render_acl(plan).encode(), secret=False),
        ]
    files.append(BundleFile(layout.BROKER_CONF, render_broker_conf(plan, options).encode(), secret=False))
    files += [
        BundleFile(layout.client_settings(p.name),
                   render_client_toml(plan, p, passwords[p.name], options).encode(), secret=True)
        for p in principals
    ]
    if options.tls is not None:
        from edgefleet.security.tls import create_ca, issue_client, issue_server

        ca = create_ca(f"edgefleet {plan.prefix} CA")
        server = issue_server(ca, options.tls.hosts, days=options.tls.days)
        files += [
            BundleFile(layout.CA_CERT, ca.cert_pem, secret=False),
            BundleFile(layout.CA_KEY, ca.key_pem, secret=True),
            BundleFile(layout.SERVER_CERT, server.cert_pem, secret=False),
            BundleFile(layout.SERVER_KEY, server.key_pem, secret=True),
        ]
        for p in principals:
            issued = issue_client(ca, p.name, days=options.tls.days)
            files += [
                BundleFile(layout.client_cert(p.name), issued.cert_pem, secret=False),
                BundleFile(layout.client_key(p.name), issued.key_pem, secret=True),
            ]
    return Bundle(plan, options, tuple(files), passwords)
