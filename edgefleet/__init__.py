"""edgefleet: many tenants' neural networks on a fleet of edge boxes, each inside its latency objective.

The package holds what both roles share: the wire contract (``edgefleet.wire``), the MQTT transport
(``edgefleet.mqtt``), the runtime seam (``edgefleet.runtime``), the model zoo (``edgefleet.zoo``), the app
SDK (``edgefleet.sdk``) and the operator command line (``edgefleet.cli``). The device agent and the
gateway coordinator are the top-level packages ``agent`` and ``coordinator``; they never import each other.
"""

__version__ = "0.1.0"
