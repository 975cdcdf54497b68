"""The fleet's principals and what each is granted, as one validated value (see ``model``)."""

from __future__ import annotations

from edgefleet.security.plan.model import AppGrant, PlanError, Principal, Role, SecurityPlan

__all__ = ["AppGrant", "PlanError", "Principal", "Role", "SecurityPlan"]
