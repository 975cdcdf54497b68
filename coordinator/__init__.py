"""The coordinator: places tenants on the fleet's devices and keeps them there.

It listens to every device's status, telemetry and acks, keeps the desired state in SQLite, sends
Deploy/Undeploy commands with retries, and answers operator calls (deploy, undeploy, status).
"""

from edgefleet.coordinator.config import (
    CommandPolicy,
    ConfigError,
    CoordinatorConfig,
    config_from_dict,
    load_config,
)
from edgefleet.coordinator.service import Coordinator

__all__ = ["CommandPolicy", "ConfigError", "Coordinator", "CoordinatorConfig", "config_from_dict", "load_config"]
