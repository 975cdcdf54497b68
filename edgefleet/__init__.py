"""edgefleet: many tenants' neural networks on a fleet of edge boxes, each inside its latency objective.

The package holds what both roles share: the wire contract (``edgefleet.wire``), the MQTT transport
(``edgefleet.mqtt``), the runtime seam (``edgefleet.runtime``), the model zoo (``edgefleet.zoo``), the app
SDK (``edgefleet.sdk``) and the operator command line (``edgefleet.cli``). The device agent, the gateway
coordinator and the benchmarks are ``edgefleet.agent``, ``edgefleet.coordinator`` and ``edgefleet.bench``
(their sources are the repository's top-level folders agent/, coordinator/ and bench/, linked here);
the agent and the coordinator never import each other.
"""

__version__ = "0.1.0"
