from django.urls import path

from annotation.research import views_gallery as v

urlpatterns = [
    path("gallery/", v.gallery, name="research-gallery"),
    path("gallery/compare/", v.gallery_compare, name="research-gallery-compare"),
]
