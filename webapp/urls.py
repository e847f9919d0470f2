from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from annotation import apis_auth

urlpatterns = [
    # pages that name no icon (the admin, the API docs) make browsers ask for /favicon.ico
    path("favicon.ico", lambda request: HttpResponsePermanentRedirect(static("annotation/favicon.svg"))),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # the split view serves Swagger UI's init script as a file (?script) and our template has no inline style: the
    # page works under the app's CSP (script-src/style-src 'self') with no exception
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api_docs/swagger_ui.html"),
         name="api-docs"),
    # API tokens (django-rest-knox): obtain with a username and password, revoke one or all
    path("api/auth/token/", apis_auth.TokenObtainApi.as_view(), name="auth-token-obtain"),
    path("api/auth/logout/", apis_auth.TokenRevokeApi.as_view(), name="auth-token-revoke"),
    path("api/auth/logout-all/", apis_auth.TokenRevokeAllApi.as_view(), name="auth-token-revoke-all"),
    # password change and reset with Django's own views (the reset mail goes to EMAIL_BACKEND: the console by default)
    path("accounts/password/change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("accounts/password/reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password/reset/done/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("research/", include("annotation.research.urls")),
    path("", include("annotation.urls")),
]
