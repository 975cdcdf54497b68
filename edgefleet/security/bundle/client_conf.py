"""One principal's ``[mqtt]`` keys, as TOML ready to merge into its configuration file.

The file holds the password in clear text (clients must send it), so it is written readable by its
owner only. Host is not set: only the person deploying knows the address clients use.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from edgefleet.security.bundle import layout
from edgefleet.security.bundle.options import BundleOptions
from edgefleet.security.plan import Principal, Role, SecurityPlan
from edgefleet.tomlio import dump_toml


def where_to_put(plan: SecurityPlan, p: Principal) -> str:
    """One line saying where these keys go, for the file's header and the command's summary."""
    if p.role is Role.COORDINATOR:
        return f'[mqtt] of the coordinator\'s config (its prefix must be "{plan.prefix}")'
    if p.role is Role.DEVICE:
        return f'[mqtt] of the agent\'s config on {p.name} ([agent] device_id = "{p.name}", prefix = "{plan.prefix}")'
    if p.role is Role.OPERATOR:
        return "MqttSettings of operator tools (edgefleet.cli.opsclient.OpsClient)"
    return (f'MqttSettings of the app; connect with InferenceClient(settings, prefix="{plan.prefix}", '
            f'client_id="{p.name}")')


def mqtt_keys(p: Principal, password: str, options: BundleOptions) -> list[tuple[str, str | int]]:
    """The ``[mqtt]`` keys in order: username, password and, with TLS, port and the three files."""
    keys: list[tuple[str, str | int]] = [("username", p.name), ("password", password)]
    if options.tls is not None:
        home = PurePosixPath(options.install_dir)
        keys += [
            ("port", options.tls.port),
            ("tls_ca", str(home / layout.CA_CERT)),
            ("tls_cert", str(home / layout.client_cert(p.name))),
            ("tls_key", str(home / layout.client_key(p.name))),
        ]
    return keys


def render_client_toml(plan: SecurityPlan, p: Principal, password: str, options: BundleOptions) -> str:
    header = [
        f"# MQTT credentials of {p.role.value} {p.name!r} for the edgefleet fleet {plan.prefix!r}.",
        f"# Goes into: {where_to_put(plan, p)}.",
        "# Secret: holds the password in clear text.",
    ]
    return "\n".join(header) + "\n" + dump_toml({"mqtt": dict(mqtt_keys(p, password, options))})
