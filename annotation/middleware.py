"""Requests the app refuses before any view runs, in its own error format (JSON ``{"detail"}`` under ``/api/``, the
htmx error partial or the error page elsewhere), never Django's bare 400 page nor a 500 from deep inside a service:

- a NUL character in a form field or a query parameter (PostgreSQL text refuses it);
- a form with more fields or files than Django parses (``DATA_UPLOAD_MAX_NUMBER_FIELDS`` / ``_FILES``) or a body
  over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (uploaded files do not count), whether this middleware reads it first (forms)
  or a view does (an API's JSON).

JSON bodies are checked by DRF's fields; uploaded files are not form fields and pass untouched."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse

from annotation.errors import ApplicationError, error_response

ERR_NUL = "Text fields cannot contain the NUL character (\\x00): remove it and send again."
ERR_TOO_BIG = "The request is too large (over {limit} bytes besides uploaded files): send less at once."
ERR_TOO_MANY_FIELDS = "The form has too many fields (over {limit}): send less at once."
ERR_TOO_MANY_FILES = "The form has too many files (over {limit}): send fewer at once."
BODY_ERRORS = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def refusal(request: HttpRequest, message: str, status: int = 400) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    retarget = "#submit-error" if request.path.startswith("/annotate/") else "#errors"
    return error_response(request, ApplicationError(message, status=status), retarget=retarget)


def body_refusal(request: HttpRequest, exc: Exception) -> HttpResponse:
    if isinstance(exc, RequestDataTooBig):
        return refusal(request, ERR_TOO_BIG.format(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE), status=413)
    if isinstance(exc, TooManyFilesSent):
        return refusal(request, ERR_TOO_MANY_FILES.format(limit=settings.DATA_UPLOAD_MAX_NUMBER_FILES))
    return refusal(request, ERR_TOO_MANY_FIELDS.format(limit=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS))


class RefuseNulCharacters:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        content_type = request.META.get("CONTENT_TYPE", "")
        form = request.method == "POST" and content_type.startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data"))
        try:
            values = [*request.GET.lists(), *(request.POST.lists() if form else [])]
        except BODY_ERRORS as exc:  # before CSRF's check reads the form (its 400 would be Django's page)
            return body_refusal(request, exc)
        if any("\x00" in key or any("\x00" in v for v in vs) for key, vs in values):
            return refusal(request, ERR_NUL)
        return self.get_response(request)

    def process_exception(self, request, exception):
        """A view that read a body Django refuses (DRF parsing an API's JSON): the same refusal."""
        return body_refusal(request, exception) if isinstance(exception, BODY_ERRORS) else None
