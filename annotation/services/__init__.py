"""Writes of the domain, one module per concern; functions are keyword-only, typed, named ``<entity>_<action>``."""
