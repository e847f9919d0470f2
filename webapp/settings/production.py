"""Production: everything from the environment; `python manage.py check --deploy` passes with no warnings when
DJANGO_SECRET_KEY (50+ random characters), DJANGO_ALLOWED_HOSTS and DATABASE_URL are set."""

from django.core.exceptions import ImproperlyConfigured

from webapp.env import env
from webapp.settings.base import *  # noqa: F401,F403

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("insecure"):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to 50+ random characters in production.")

# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# Trust X-Forwarded-Proto only behind a TLS-terminating proxy that sets it (and strips it from clients):
# DJANGO_BEHIND_TLS_PROXY=true. Otherwise any client could claim HTTPS.
if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
