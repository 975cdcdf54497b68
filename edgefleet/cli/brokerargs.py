"""The broker options every operator command shares, and the MqttSettings they describe.

``--mqtt-config FILE`` reads the ``[mqtt]`` table of a TOML file — the per-principal file that
``edgefleet security init`` writes (``clients/operator.toml``), or an agent's or coordinator's own
config — so credentials and TLS paths never have to appear on a command line. ``--host`` and
``--port`` given explicitly override the file; the password can also come from EDGEFLEET_MQTT_PASSWORD.
Without ``--mqtt-config`` the broker is the one of ``$EDGEFLEET_MQTT_URL`` or of the client config file
(``edgefleet.paths``), so one export serves every command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from edgefleet.mqtt import MqttSettings


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("broker")
    g.add_argument("--host", default=None,
                   help="MQTT broker host (default: from $EDGEFLEET_MQTT_URL or the client config file, else "
                        "127.0.0.1)")
    g.add_argument("--port", type=int, default=None,
                   help="MQTT broker port (default: from $EDGEFLEET_MQTT_URL or the client config file, else 1883)")
    g.add_argument("--prefix", default="ef", help="topic prefix of the fleet (default ef)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)")
    g.add_argument("--mqtt-config", default=None, metavar="FILE",
                   help="TOML file whose [mqtt] table gives host, port, username, password and TLS files "
                        "(e.g. clients/operator.toml from `edgefleet security init`)")
    g.add_argument("--username", default=None, help="MQTT username (password from EDGEFLEET_MQTT_PASSWORD)")


def settings_from_args(args: argparse.Namespace) -> MqttSettings:
    """MqttSettings from the options; ConfigError (a ValueError) when the file is missing or wrong."""
    from edgefleet.config import mqtt_settings, read_toml

    if args.mqtt_config:
        settings = mqtt_settings(args.mqtt_config, read_toml(args.mqtt_config).get("mqtt"), ambient=False)
    else:
        settings = mqtt_settings("defaults", None)  # $EDGEFLEET_MQTT_URL, the client config file
    if args.host is not None:
        settings = dataclasses.replace(settings, host=args.host)
    if args.port is not None:
        settings = dataclasses.replace(settings, port=args.port)
    if args.username is not None:
        settings = dataclasses.replace(settings, username=args.username)
    password = os.environ.get("EDGEFLEET_MQTT_PASSWORD")
    if password and (args.username is not None or settings.password is None):
        settings = dataclasses.replace(settings, password=password)
    return settings
