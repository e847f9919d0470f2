from django.apps import AppConfig


class GenerationWorkersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "generation_workers"
    verbose_name = "Generation workers"
