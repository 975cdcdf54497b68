"""The coordinator: places tenants on the fleet's devices and keeps them there.

It listens to every device's status, telemetry and acks, keeps the desired state in SQLite, sends
Deploy/Undeploy commands with retries, and answers operator calls (deploy, undeploy, status).
"""

from coordinator.config import CommandPolicy, ConfigError, CoordinatorConfig, config_from_dict, load_config
from coordinator.service import Coordinator

__all__ = ["CommandPolicy", "ConfigError", "Coordinator", "CoordinatorConfig", "config_from_dict", "load_config"]
