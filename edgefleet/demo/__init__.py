"""``edgefleet demo``: a fleet of three agents on this machine serving real models under Poisson load.

``plan`` says what runs (pure data), ``stats`` keeps per-tenant counts and latency windows and renders
the table (pure, clock injected), ``load`` drives the apps' requests (asyncio), and
``edgefleet.cli.demo`` puts them together around a ``LocalFleet``.
"""
