"""Reads of the domain, one module per concern; querysets with select_related/prefetch_related."""
