"""Topic permissions per principal: the rules (``rules``), how Mosquitto applies them (``match``) and
the ACL file that carries them (``render``)."""

from __future__ import annotations

from edgefleet.security.acl.match import permits, topic_matches
from edgefleet.security.acl.render import render_acl
from edgefleet.security.acl.rules import Access, AclRule, acl_rules

__all__ = ["Access", "AclRule", "acl_rules", "permits", "render_acl", "topic_matches"]
