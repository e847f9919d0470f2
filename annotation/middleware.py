"""Requests the database could not store: a NUL character in a form field or a query parameter (PostgreSQL text
refuses it) is a 400 with a message, never a 500 from deep inside a service. JSON bodies are checked by DRF's
fields; uploaded files are not form fields and pass untouched."""

from __future__ import annotations

from annotation.errors import ApplicationError, error_response

ERR_NUL = "Text fields cannot contain the NUL character (\\x00): remove it and send again."


class RefuseNulCharacters:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        content_type = request.META.get("CONTENT_TYPE", "")
        form = request.method == "POST" and content_type.startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data"))
        values = [*request.GET.lists(), *(request.POST.lists() if form else [])]
        if any("\x00" in key or any("\x00" in v for v in vs) for key, vs in values):
            retarget = "#submit-error" if request.path.startswith("/annotate/") else "#errors"
            return error_response(request, ApplicationError(ERR_NUL), retarget=retarget)
        return self.get_response(request)
