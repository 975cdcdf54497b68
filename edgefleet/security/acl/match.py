"""How Mosquitto 2.0 applies the rules of an ACL file, as a pure function for tests and tools.

Mosquitto grants every SUBSCRIBE (a filter like ``{root}/devices/+/telemetry`` is accepted whatever the
ACL says) and checks read access on each message as it delivers it, against the message's own topic;
shared subscriptions (``$share/GROUP/...``) are checked the same way. A denied publish is dropped and,
for QoS 1 in MQTT 5, answered with PUBACK reason code 135 (not authorized). So both directions reduce to
one question: does a rule of this user, with this access, match this concrete topic?
"""

from __future__ import annotations

from collections.abc import Iterable

from edgefleet.security.acl.rules import Access, AclRule


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT filter matching: '+' is one level, a trailing '#' is any number of levels (zero included)."""
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    if t_parts[0].startswith("$") and f_parts[0] in ("+", "#"):
        return False  # wildcards never match $SYS-style topics at the first level
    for i, f in enumerate(f_parts):
        if f == "#":
            return i == len(f_parts) - 1
        if i >= len(t_parts) or (f != "+" and f != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def permits(rules: Iterable[AclRule], user: str, access: Access, topic: str) -> bool:
    """Whether ``user`` may ``access`` the concrete ``topic`` under ``rules``."""
    return any(r.user == user and r.access is access and topic_matches(r.topic, topic) for r in rules)
