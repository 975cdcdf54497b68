"""Where edgefleet keeps things on a machine when nobody says otherwise, so the example configs run unedited.

* State (the agent's SQLite state and outbox, the coordinator's database, ``edgefleet broker``'s
  persistence): ``$STATE_DIRECTORY`` when systemd runs the process with ``StateDirectory=`` (the units
  do), else ``$XDG_STATE_HOME/edgefleet`` when set, else ``/var/lib/edgefleet`` for root, else
  ``~/.local/state/edgefleet``.
* The broker's address for every command: ``--host``/``--port``, else ``--mqtt-config FILE``, else
  ``$EDGEFLEET_MQTT_URL`` (``mqtt://[user[:password]@]host[:port]``), else the ``[mqtt]`` table of the
  client config file ``$XDG_CONFIG_HOME/edgefleet/client.toml`` (``~/.config/edgefleet/client.toml``),
  else ``mqtt://127.0.0.1:1883``. The agent and the coordinator take the keys their own ``[mqtt]`` table
  leaves out from the same ``$EDGEFLEET_MQTT_URL`` and client file.
"""

from __future__ import annotations

import os
from pathlib import Path

MQTT_URL_ENV = "EDGEFLEET_MQTT_URL"


def state_root() -> Path:
    """The folder under which edgefleet's processes keep their state by default (see the module doc)."""
    systemd = os.environ.get("STATE_DIRECTORY")  # set by systemd for StateDirectory=; may list several
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:  # set explicitly: honoured for root too
        return Path(xdg).expanduser() / "edgefleet"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/edgefleet")
    return Path.home() / ".local" / "state" / "edgefleet"


def default_state_dir(component: str) -> Path:
    """The state folder of one process: the unit's own ``StateDirectory=`` as is (it is per unit),
    else ``<state_root>/<component>`` (``agent-edge-01``, ``coordinator``, ``broker``)."""
    if os.environ.get("STATE_DIRECTORY"):
        return state_root()
    return state_root() / component


def client_config_path() -> Path:
    """The per-user client config file whose ``[mqtt]`` table names the broker for every command."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "edgefleet" / "client.toml"
