from django.urls import path

from annotation.research import views_forms as v

urlpatterns = [
    path("rounds/new/preview/", v.round_form_preview, name="research-round-preview"),
]
