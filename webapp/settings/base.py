"""Settings shared by every mode; differences come from environment variables (see README, "Configuration")."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from webapp.embedded import embedded_database_url
from webapp.env import BASE_DIR, DATA_DIR, database_url_parse, env, installation_secret

# DJANGO_SECRET_KEY unset: a random key generated on first start and kept in the data folder (never a fixed string,
# so sessions, signed links and export pseudonyms cannot be forged or reversed from the source code).
SECRET_KEY = env("DJANGO_SECRET_KEY", default="") or installation_secret(DATA_DIR)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "knox",
    "axes",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_celery_results",
    "annotation",
    "generation_workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "annotation.middleware.RefuseNulCharacters",  # a NUL in a form field or query: 400, not a database 500
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into a 429 page
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# https://docs.djangoproject.com/en/5.2/ref/settings/#databases
# DATABASE_URL unset -> the embedded PostgreSQL (pgserver), data under VIDEODPO_DATA_DIR/postgres.
_database_url = os.environ.get("DATABASE_URL") or embedded_database_url(DATA_DIR)
DATABASES = {"default": database_url_parse(_database_url)}
# The quick start's own database (pgserver's socket under the data folder): management commands migrate it on first
# use instead of failing on a missing table (annotation/management/schema.py).
EMBEDDED_DATABASE = str(DATA_DIR / "postgres") in _database_url
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "staticfiles"

# -- authentication and abuse limits -----------------------------------------------------------------------------------
# django-axes (https://django-axes.readthedocs.io/): a username is locked for AXES_COOLOFF_TIME after
# AXES_FAILURE_LIMIT wrong passwords from one address; the lockout is checked before the password is hashed.
AUTHENTICATION_BACKENDS = [
    "annotation.authentication.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("VIDEODPO_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("VIDEODPO_LOGIN_COOLOFF_MIN", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_CALLABLE = "annotation.authentication.lockout_response"
# django-rest-knox (https://jazzband.github.io/django-rest-knox/): tokens stored hashed, expire, revoked by logout.
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env.int("VIDEODPO_TOKEN_TTL_H", default=12)),
    "AUTO_REFRESH": False,
    "TOKEN_LIMIT_PER_USER": env.int("VIDEODPO_TOKEN_LIMIT_PER_USER", default=20),
}
# Password reset mails: printed on the console unless an SMTP server is configured (DJANGO_EMAIL_URL).
_email = env.email_url("DJANGO_EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST, EMAIL_PORT = _email.get("EMAIL_HOST", ""), _email.get("EMAIL_PORT", 25)
EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_USER", ""), _email.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", default="videodpo@localhost")

# -- Content-Security-Policy (django-csp): scripts, styles and media from this origin only (htmx and the player are
# static files; no inline script or style). Media links are same-origin (/m/) or the object store's presigned URLs.
_media_origins = env.list("VIDEODPO_CSP_MEDIA_ORIGINS", default=[])
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", *_media_origins],
        "media-src": ["'self'", "blob:", *_media_origins],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
# Prompt imports (file upload or the bulk API) above this size are refused with a message (413); big ones are streamed.
PROMPT_IMPORT_MAX_BYTES = env.int("VIDEODPO_IMPORT_MAX_BYTES", default=100 * 1024 * 1024)
# Imports above this size run as a background job (queue default) with progress on the page; the bulk API answers 202.
PROMPT_IMPORT_ASYNC_BYTES = env.int("VIDEODPO_IMPORT_ASYNC_BYTES", default=2 * 1024 * 1024)

# The OpenAPI schema and its docs page: public only when DEBUG (or VIDEODPO_PUBLIC_API_DOCS); else signed-in users.
PUBLIC_API_DOCS = env.bool("VIDEODPO_PUBLIC_API_DOCS", default=DEBUG)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# https://www.django-rest-framework.org/api-guide/settings/
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # expiring, revocable tokens (django-rest-knox), loading the user's roles and profile in the same query;
        # first, so that a missing or bad token answers 401 with "WWW-Authenticate: Token"
        "annotation.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # DRF's parsers, with JSON nesting bounded (a 5,000-deep body was a RecursionError, a 500)
    "DEFAULT_PARSER_CLASSES": [
        "annotation.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "auth": env("VIDEODPO_THROTTLE_AUTH", default="10/min"),  # token obtain: per client address
        "annotate": env("VIDEODPO_THROTTLE_ANNOTATE", default="1200/min"),  # next group / submit: per user
        "research": env("VIDEODPO_THROTTLE_RESEARCH", default="300/min"),
    },
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # ApplicationError and Django ValidationError from the services -> {"detail": message} with their 4xx status
    "EXCEPTION_HANDLER": "annotation.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
# https://drf-spectacular.readthedocs.io/en/latest/settings.html (sidecar: the docs page works offline)
SPECTACULAR_SETTINGS = {
    "TITLE": "Video-DPO feedback loop API",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # /api/schema/ and /api/docs/: anyone in development, signed-in users (session or token) otherwise
    "SERVE_PERMISSIONS": [
        "rest_framework.permissions.AllowAny" if PUBLIC_API_DOCS else "rest_framework.permissions.IsAuthenticated"
    ],
    "ENUM_NAME_OVERRIDES": {
        "PromptSourceEnum": "annotation.models.Prompt.Source",
        "PairSourceEnum": "annotation.models.PreferencePair.Source",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
}

# Product settings: every default of the app and the workers is here (each overridable from the environment); read
# through the typed, frozen ``annotation.conf.videodpo()`` (a missing or unknown key fails at first use).
_model_cache_dir = env("VIDEODPO_MODEL_CACHE_DIR", default=str(DATA_DIR / "model-cache"))
VIDEODPO = {
    # annotation
    "RESERVATION_TTL_S": env.int("VIDEODPO_RESERVATION_TTL_S", default=15 * 60),
    "RESERVATION_LOOKAHEAD": env.int("VIDEODPO_RESERVATION_LOOKAHEAD", default=1),
    "MAX_PROMPT_CHARS": env.int("VIDEODPO_MAX_PROMPT_CHARS", default=2000),
    "MEDIA_URL_TTL_S": env.int("VIDEODPO_MEDIA_URL_TTL_S", default=60 * 60),
    # annotation quality control (annotation/services/quality.py, pairs.py)
    "FULL_PLAYBACK_MIN_COVERAGE": env.float("VIDEODPO_FULL_PLAYBACK_MIN_COVERAGE", default=0.9),
    "PAIR_MIN_MAJORITY": env.float("VIDEODPO_PAIR_MIN_MAJORITY", default=2 / 3),
    "QC_MIN_GOLD": env.int("VIDEODPO_QC_MIN_GOLD", default=5),
    "QC_MIN_GOLD_ACCURACY": env.float("VIDEODPO_QC_MIN_GOLD_ACCURACY", default=0.6),
    "QC_MIN_JUDGMENTS_FOR_BIAS": env.int("VIDEODPO_QC_MIN_JUDGMENTS_FOR_BIAS", default=30),
    "QC_MAX_POSITION_BIAS": env.float("VIDEODPO_QC_MAX_POSITION_BIAS", default=0.9),
    "QC_SAMPLE_LIMIT": env.int("VIDEODPO_QC_SAMPLE_LIMIT", default=50_000),
    # generation workers (generation_workers/README.md)
    "MODEL_CACHE_DIR": _model_cache_dir,
    "DEVICE": env("VIDEODPO_DEVICE", default="auto"),
    "SPLIT_QUEUES": env.bool("VIDEODPO_SPLIT_QUEUES", default=False),
    "BATCH_SEEDS": env.bool("VIDEODPO_BATCH_SEEDS", default=False),
    "STALE_RUNNING_S": env.float("VIDEODPO_STALE_RUNNING_S", default=300.0),
    "HEARTBEAT_S": env.float("VIDEODPO_HEARTBEAT_S", default=10.0),
    "PROGRESS_INTERVAL_S": env.float("VIDEODPO_PROGRESS_INTERVAL_S", default=0.5),
    "POSITIVE_SUFFIX": env.bool("VIDEODPO_POSITIVE_SUFFIX", default=True),
    "X264_PRESET": env("VIDEODPO_X264_PRESET", default="medium"),
    "X264_CRF": env.int("VIDEODPO_X264_CRF", default=18),
    # a callable factory(root, preset=, device=) instead of StepVideoPipeline.from_pretrained (tests, benchmarks)
    "PIPELINE_FACTORY": env("VIDEODPO_PIPELINE_FACTORY", default=""),
    # GPUs one generation worker owns; > 1 runs the DiT sequence-parallel across them (generation_workers/parallel.py)
    "GPUS_PER_JOB": env.int("VIDEODPO_GPUS_PER_JOB", default=1),
    "SCREENING": {},  # overrides of generation_workers.screening.ScreeningThresholds, e.g. {"static_diff": 0.5}
    # DPO runs (generation_workers/training.py): run folders (manifest, checkpoints, final model root), by default
    # next to the model cache
    "RUNS_DIR": env("VIDEODPO_RUNS_DIR", default=str(Path(_model_cache_dir).parent / "dpo-runs")),
    # reward runs: the video language model folder (a path or s3:// URI) the new-run form offers for the VLM backbone
    "REWARD_VLM_ROOT": env("VIDEODPO_REWARD_VLM_ROOT", default=""),
}

from webapp.settings.components.celery import *  # noqa: E402,F401,F403
from webapp.settings.components.storage import *  # noqa: E402,F401,F403

# Media from the object store: presigned URLs on its origin are allowed as images and video (CSP).
if STORAGE_BACKEND == "s3":  # noqa: F405
    from urllib.parse import urlsplit as _urlsplit

    _endpoint = _urlsplit(AWS_S3_ENDPOINT_URL or "https://s3.amazonaws.com")  # noqa: F405
    _store_origins = [f"{_endpoint.scheme}://{_endpoint.netloc}", f"{_endpoint.scheme}://*.{_endpoint.netloc}"]
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["img-src"] += _store_origins
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["media-src"] += _store_origins
