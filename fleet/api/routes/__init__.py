"""Routers. Their paths carry the full ``/api/v1`` prefix so a matched route's
``path`` is the whole template, which the latency metric uses as its label."""

API_PREFIX = "/api/v1"
