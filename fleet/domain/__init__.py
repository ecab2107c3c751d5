"""Pure domain logic of the fleet service.

Nothing in this package may import SQLAlchemy, FastAPI, paho or zeroconf
(``tests/service/test_layering.py`` enforces it): the rules here are tested
without a database or a network, and the adapters translate to and from them.
"""
