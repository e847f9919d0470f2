"""``{% load exports %}``: an export's filter in people's words (the same text its datasheet gives)."""

from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def filter_words(export) -> str:
    """``rounds 3, 4; agreement >= 0.6; videos bundled``, or ``everything except evaluation rounds``; a stored filter
    that no longer parses is shown as its JSON."""
    from annotation.exports.filters import ExportFilterError, filter_parse

    described = (export.datasheet or {}).get("filter_description")
    if described:  # a finished export's datasheet says it (no query per row of the list)
        return described
    try:
        return filter_parse(export.filter or {}, format=export.format).describe()
    except ExportFilterError:
        return json.dumps(export.filter, ensure_ascii=False, sort_keys=True)
