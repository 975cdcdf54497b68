"""The ``edgefleet security init`` sub-command: MQTT credentials and topic permissions for a fleet.

It writes what a Mosquitto broker needs to admit only the fleet's principals (coordinator, operator
tools, devices, apps) and to keep each to its own topics: a password file, an ACL file, a configuration
snippet and, with ``--tls``, a CA with broker and client certificates. With ``--dynamic`` the password
file and ACL are replaced by the dynamic security plugin's file: devices then start with their own
topics only, and the coordinator grants each tenant's topics to the devices it places the tenant on. Each principal gets a TOML file
with its ``[mqtt]`` keys. Passwords are never printed, only written to files readable by their owner.
Exit status: 0 written, 1 refused (files exist) or not written, 2 usage (bad names or options).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefleet.security import SecurityPlan
    from edgefleet.security.bundle import Bundle, BundleOptions

_TLS_DEFAULT_PORT = 8883
_TLS_DEFAULT_DAYS = 825


def register(subparsers: Any) -> None:
    """Add ``security init`` to the parent CLI."""
    security = subparsers.add_parser("security", help="broker credentials and access control for a fleet")
    actions = security.add_subparsers(dest="security_command", metavar="ACTION")
    security.set_defaults(func=lambda _args: _usage(security))

    init = actions.add_parser(
        "init",
        help="write a password file, an ACL, a Mosquitto config snippet and per-principal [mqtt] keys",
        description="Generate credentials and topic permissions for one fleet. Refuses to overwrite "
                    "existing files unless --force (regenerating changes every password).",
    )
    init.add_argument("--out", required=True, type=Path, help="directory to write into (created if missing)")
    init.add_argument("--prefix", default="ef", help="topic prefix of the fleet (default ef)")
    init.add_argument("--devices", action="append", default=[], metavar="NAME[,NAME...]",
                      help="device ids (the agents' [agent] device_id); repeatable")
    init.add_argument("--app", action="append", default=[], metavar="NAME=TENANT[,TENANT...]",
                      help="an app and the tenants it may call; repeatable")
    init.add_argument("--coordinator", default="coordinator", help="the coordinator's username")
    init.add_argument("--operator", default="operator", help="username for operator tools (default operator)")
    init.add_argument("--no-operator", action="store_true", help="create no operator account")
    init.add_argument("--install-dir", type=Path, default=None,
                      help="where the files will be read from, written into the configs (default: --out)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.add_argument("--dynamic", action="store_true",
                      help="use Mosquitto's dynamic security plugin: devices get a tenant's topics only while "
                           "the coordinator places it on them (the static ACL lets every device read every "
                           "tenant's requests)")
    init.add_argument("--plugin-path", default=None, metavar="PATH",
                      help="with --dynamic: mosquitto_dynamic_security.so (default: Debian's path)")
    tls = init.add_argument_group("TLS (client certificates)")
    tls.add_argument("--tls", action="store_true",
                     help="also create a CA, a broker certificate and one client certificate per principal")
    tls.add_argument("--tls-port", type=int, default=None, help=f"TLS listener port (default {_TLS_DEFAULT_PORT})")
    tls.add_argument("--tls-bind", default=None, help="TLS listener address (default: every interface)")
    tls.add_argument("--tls-host", action="append", default=None, metavar="HOST",
                     help="name or address clients connect to, for the broker certificate; repeatable "
                          "(default localhost and 127.0.0.1)")
    tls.add_argument("--tls-days", type=int, default=None,
                     help=f"validity of broker and client certificates (default {_TLS_DEFAULT_DAYS})")
    init.set_defaults(func=cmd_init)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _fail(message: str, code: int) -> int:
    print(f"edgefleet security init: {message}", file=sys.stderr)
    return code


def _names(values: list[str]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",")]


def _plan(args: argparse.Namespace) -> SecurityPlan:
    from edgefleet.security import AppGrant, PlanError, SecurityPlan

    apps = []
    for spec in args.app:
        name, sep, tenants = spec.partition("=")
        if not sep:
            raise PlanError(f"--app expects NAME=TENANT[,TENANT...], got {spec!r}")
        apps.append(AppGrant(name.strip(), tuple(_names([tenants]))))
    return SecurityPlan(
        prefix=args.prefix,
        coordinator=args.coordinator,
        operator=None if args.no_operator else args.operator,
        devices=tuple(_names(args.devices)),
        apps=tuple(apps),
    )


def _options(args: argparse.Namespace) -> BundleOptions:
    from edgefleet.security.bundle import BundleOptions, TlsOptions

    tls_flags = [f for f, v in (("--tls-port", args.tls_port), ("--tls-bind", args.tls_bind),
                                ("--tls-host", args.tls_host), ("--tls-days", args.tls_days)) if v is not None]
    if tls_flags and not args.tls:
        raise ValueError(f"{', '.join(tls_flags)}: needs --tls")
    tls = None
    if args.tls:
        tls = TlsOptions(
            port=_TLS_DEFAULT_PORT if args.tls_port is None else args.tls_port,
            bind=args.tls_bind,
            hosts=tuple(args.tls_host) if args.tls_host else TlsOptions().hosts,
            days=_TLS_DEFAULT_DAYS if args.tls_days is None else args.tls_days,
        )
    install = args.install_dir if args.install_dir is not None else args.out.absolute()
    if args.plugin_path is not None and not args.dynamic:
        raise ValueError("--plugin-path: needs --dynamic")
    plugin = {} if args.plugin_path is None else {"plugin_path": args.plugin_path}
    return BundleOptions(install_dir=install, tls=tls, dynamic=args.dynamic, **plugin)


def cmd_init(args: argparse.Namespace) -> int:
    from edgefleet.security.bundle import BundleExists, build_bundle, write_bundle

    try:
        plan = _plan(args)
        options = _options(args)
    except ValueError as exc:  # PlanError included
        return _fail(str(exc), 2)
    if options.tls is not None:
        try:
            import cryptography  # noqa: F401
        except ModuleNotFoundError:
            return _fail("--tls needs the 'cryptography' package: pip install 'edgefleet[security]'", 2)
    bundle = build_bundle(plan, options)
    try:
        write_bundle(bundle, args.out, force=args.force)
    except BundleExists as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"cannot write to {args.out}: {exc}", 1)
    _summary(bundle, args.out)
    return 0


def _summary(bundle: Bundle, out: Path) -> None:
    from edgefleet.security.bundle import layout
    from edgefleet.security.bundle.client_conf import mqtt_keys, where_to_put
    from edgefleet.tomlio import dump_toml

    plan, options = bundle.plan, bundle.options
    home = options.install_dir
    print(f"wrote {len(bundle.files)} files to {out} (secrets readable by their owner only)")
    print()
    print(f"broker: include {out / layout.BROKER_CONF} in Mosquitto's configuration (Debian: copy it to")
    print(f"  /etc/mosquitto/conf.d/edgefleet.conf). It reads its files from {home}; let the user Mosquitto")
    if options.dynamic:
        print(f"  runs as read and write {layout.DYNSEC} and its directory there (the plugin saves every change")
        print("  to it; e.g. chown mosquitto). The coordinator holds the plugin's admin role and adds a tenant's")
        print('  role to a device only while the tenant is placed there: set [security] grants = "mosquitto-dynsec"')
        print("  in the coordinator's config.")
        if options.tls:
            print(f"  Let it also read {layout.SERVER_KEY} there.")
    else:
        secret_for_broker = [layout.PASSWD, *([layout.SERVER_KEY] if options.tls else [])]
        print(f"  runs as read {', '.join(secret_for_broker)} there (e.g. chown root:mosquitto, chmod 0640).")
    if options.tls is not None:
        print(f"  TLS listener on port {options.tls.port}; the broker certificate is valid for "
              f"{', '.join(options.tls.hosts)} (clients' [mqtt] host must be one of them).")
        print(f"  {layout.CA_KEY} signs certificates: keep it offline, not on the broker.")
    print()
    print("clients: merge each principal's keys into its configuration; the password is only in its file.")
    for p in plan.principals():
        print()
        print(f"{p.role.value} {p.name}: {out / layout.client_settings(p.name)}")
        print(f"  into {where_to_put(plan, p)}")
        print("  [mqtt]")
        for key, value in mqtt_keys(p, bundle.passwords[p.name], options):
            print(f"  {key} = <in the file above>" if key == "password" else f"  {dump_toml({key: value}).strip()}")
