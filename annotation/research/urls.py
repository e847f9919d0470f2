"""URLs of the researcher's loop; each feature module contributes its own ``urlpatterns``."""

from django.urls import include, path

urlpatterns = [
    path("", include("annotation.research.urls_loop")),
    path("", include("annotation.research.urls_exports")),
    path("", include("annotation.research.urls_gallery")),
    path("", include("annotation.research.urls_forms")),
    path("", include("annotation.research.urls_prompts")),
]
