"""The edgefleet agent: one per device. Hosts its tenants' models, serves their inference requests
that arrive over MQTT, applies the coordinator's commands at most once, and publishes status and
telemetry. It never imports the coordinator; both speak only the wire contract (``edgefleet.wire``).
"""
