"""How a bundle is to be generated, beyond the plan: where its files will live, TLS or not, and static
ACL or the dynamic security plugin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_TLS_HOSTS = ("localhost", "127.0.0.1")
DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"  # Debian/Ubuntu amd64 package


@dataclass(frozen=True)
class TlsOptions:
    """A TLS listener with client certificates. ``hosts`` are the names and addresses clients connect
    to (the broker certificate's subject alternative names)."""

    port: int = 8883
    bind: str | None = None  # listen address; None: every interface
    hosts: tuple[str, ...] = DEFAULT_TLS_HOSTS
    days: int = 825  # validity of the broker and client certificates

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ValueError(f"TLS port must be in 1..65535, got {self.port}")
        if not self.hosts or any(not h or any(c.isspace() for c in h) for h in self.hosts):
            raise ValueError(f"TLS hosts must be non-empty names or addresses, got {self.hosts!r}")
        if self.bind is not None and (not self.bind or any(c.isspace() for c in self.bind)):
            raise ValueError(f"invalid TLS bind address {self.bind!r}")
        if self.days < 1:
            raise ValueError(f"certificate validity must be at least 1 day, got {self.days}")


@dataclass(frozen=True)
class BundleOptions:
    """``install_dir`` is the absolute directory the files will be read from (by the broker and, for
    client certificates, by the clients); it is written into the generated configuration."""

    install_dir: Path
    tls: TlsOptions | None = None
    dynamic: bool = False  # the dynamic security plugin instead of a password file and a static ACL
    plugin_path: str = DYNSEC_PLUGIN  # where the broker finds mosquitto_dynamic_security.so

    def __post_init__(self) -> None:
        if not self.install_dir.is_absolute():
            raise ValueError(f"install_dir must be absolute, got {str(self.install_dir)!r}")
        if any(c in str(self.install_dir) for c in "\r\n\"\\"):
            raise ValueError(f"install_dir cannot be written into the configuration: {str(self.install_dir)!r}")
        if not self.plugin_path.startswith("/") or any(c in self.plugin_path for c in "\r\n\""):
            raise ValueError(f"plugin path must be absolute, got {self.plugin_path!r}")
