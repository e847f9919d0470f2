from django.contrib.auth import views as auth_views
from django.urls import include, path

from annotation import views, views_qc

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("m/<str:token>", views.media, name="media"),  # every signed media link (annotation.media)
    path("annotate/", views.annotate, name="annotate"),
    path("annotate/submit/", views.annotate_submit, name="annotate-submit"),
    path("qc/", views.qc, name="qc"),
    path("qc/annotators/<int:annotator_id>/pause/", views_qc.qc_annotator_pause, name="qc-annotator-pause"),
    path("review/", views.review_list, name="review-list"),
    path("review/<int:pk>/", views.review_detail, name="review-detail"),
    path("api/", include("annotation.api_urls")),
]
