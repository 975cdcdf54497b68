"""Where each file of a bundle goes, relative to the bundle's directory. One place, so the renderers
(which write paths into configuration) and the writer agree."""

from __future__ import annotations

PASSWD = "passwd"
ACL = "acl"
DYNSEC = "dynamic-security.json"  # the dynamic security plugin's state; Mosquitto rewrites it
BROKER_CONF = "mosquitto.conf"
TLS_DIR = "tls"
CA_CERT = f"{TLS_DIR}/ca.crt"
CA_KEY = f"{TLS_DIR}/ca.key"
SERVER_CERT = f"{TLS_DIR}/server.crt"
SERVER_KEY = f"{TLS_DIR}/server.key"
CLIENTS_DIR = "clients"


def client_settings(name: str) -> str:
    """The principal's ``[mqtt]`` keys (username, password, TLS files)."""
    return f"{CLIENTS_DIR}/{name}.toml"


def client_cert(name: str) -> str:
    return f"{CLIENTS_DIR}/{name}.crt"


def client_key(name: str) -> str:
    return f"{CLIENTS_DIR}/{name}.key"
