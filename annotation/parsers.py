"""The API's JSON parser: DRF's, refusing documents nested deeper than ``MAX_DEPTH`` with a 400 (a body nested
5,000 deep raised RecursionError in the decoder or in later validation, a 500)."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 32
ERR_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels."


def json_depth_ok(data, limit: int = MAX_DEPTH) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return True


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(ERR_TOO_DEEP) from None
        if not json_depth_ok(data):
            raise ParseError(ERR_TOO_DEEP)
        return data
