"""MQTT 5 transport shared by agent, coordinator, SDK and operator tools (paho-mqtt 2.x underneath)."""

from edgefleet.mqtt.link import Inbound, MqttLink, MqttSettings, Will

__all__ = ["Inbound", "MqttLink", "MqttSettings", "Will"]
