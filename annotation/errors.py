"""One error type for everything a user must change, and the two places that turn it into an answer.

Services raise ``ApplicationError`` (or a subclass naming the domain: ``JudgmentError``, ``PromptError``...) with a
message written for the person who sees it and the HTTP status to answer with; model validation raises Django's
``ValidationError``. Nothing above the services maps exceptions by hand:

- the DRF API: ``api_exception_handler`` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``) answers ``{"detail": message}``
  with the error's status, as DRF does for its own errors;
- the HTML and htmx views: ``html_errors`` (a decorator) renders the error partial for htmx requests (retargeted to
  the page's ``#errors`` box, or the one the view names) and the error page otherwise, with the error's status;
  ``error_messages`` gives the lines for a form that shows them itself; ``flash_result`` runs an action of a
  post-and-redirect view and flashes its outcome.
"""

from __future__ import annotations

import re
from functools import wraps

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApplicationError(Exception):
    """A request the user must change. ``message`` is shown as it is; ``status`` is the HTTP status (4xx)."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, extra: dict | None = None):
        self.message = message
        if status is not None:
            self.status = status
        self.extra = extra or {}
        super().__init__(message)


def error_messages(exc: ApplicationError | ValidationError) -> list[str]:
    """The lines a person reads: the message, or each field's messages as ``field: message``."""
    if isinstance(exc, ApplicationError):
        return [exc.message]
    if hasattr(exc, "message_dict"):
        return [f"{field}: {m}" if field != "__all__" else m for field, msgs in exc.message_dict.items() for m in msgs]
    return list(exc.messages)


def error_status(exc: ApplicationError | ValidationError) -> int:
    return exc.status if isinstance(exc, ApplicationError) else 400


def api_exception_handler(exc, context) -> Response | None:
    """DRF's handler, plus ``ApplicationError`` and Django's ``ValidationError`` as ``{"detail": ...}`` 4xx answers."""
    if isinstance(exc, ApplicationError | ValidationError):
        return Response({"detail": "; ".join(error_messages(exc)), **getattr(exc, "extra", {})},
                        status=error_status(exc))
    return exception_handler(exc, context)


def error_response(request: HttpRequest, exc: ApplicationError | ValidationError, *, retarget: str = "#errors",
                   template: str = "annotation/error.html") -> HttpResponse:
    """The HTML answer to a refused request (status from the error): for htmx the error partial swapped into
    ``retarget``; otherwise ``template`` (a full page with the message)."""
    context = {"error": " ".join(error_messages(exc)), "errors": error_messages(exc)}
    if getattr(request, "htmx", False):
        response = render(request, "annotation/partials/error.html", context, status=error_status(exc))
        response["HX-Retarget"] = retarget
        response["HX-Reswap"] = "innerHTML"
        return response
    return render(request, template, context, status=error_status(exc))


def html_errors(view=None, *, retarget: str = "#errors"):
    """Decorate a function view so that an ``ApplicationError`` or ``ValidationError`` it lets through becomes
    ``error_response`` (never a 500)."""

    def decorator(fn):
        @wraps(fn)
        def wrapped(request, *args, **kwargs):
            try:
                return fn(request, *args, **kwargs)
            except (ApplicationError, ValidationError) as exc:
                return error_response(request, exc, retarget=retarget)

        return wrapped

    return decorator(view) if view is not None else decorator


def flash_result(request: HttpRequest, action, *, success: str):
    """Run ``action()`` for a view that redirects afterwards: flash ``success.format(result)`` and return the result,
    or flash the refusal's messages and return None."""
    try:
        result = action()
    except (ApplicationError, ValidationError) as exc:
        messages.error(request, " ".join(error_messages(exc)))
        return None
    messages.success(request, success.format(result))
    return result


def is_int(text: str) -> bool:
    """Whether ``text`` is a non-negative integer that ``int()`` and a bigint column take: ASCII digits only
    (``str.isdigit`` also accepts "²", on which ``int`` fails, and ``str.isdecimal`` "١٢", which ``int`` reads as 12)
    and at most 18 of them."""
    return isinstance(text, str) and text.isascii() and text.isdecimal() and len(text) <= 18


_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")


def is_decimal(text: str) -> bool:
    """Whether ``text`` is a plain decimal number ("2", "-0.5", ".25", "1e-3"): ASCII only, none of the spellings
    ``float()`` also takes ("1_0", "١٢", "nan", "inf", surrounding spaces)."""
    return isinstance(text, str) and len(text) <= 40 and text.isascii() and _DECIMAL.fullmatch(text) is not None
