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

    sheet = export.datasheet if isinstance(export.datasheet, dict) else {}
    described = sheet.get("filter_description")
    if isinstance(described, str) and described:  # a finished export's datasheet says it (no query per list row)
        return described
    stored = export.filter or {}
    if isinstance(stored, dict):
        try:
            return filter_parse(stored, format=export.format).describe()
        except (ExportFilterError, TypeError, ValueError, AttributeError):
            pass
    return json.dumps(stored, ensure_ascii=False, sort_keys=True, default=str)[:500]
