from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotation"
    verbose_name = "Video-DPO feedback loop"

    def ready(self) -> None:
        from annotation import notifications

        notifications.connect()  # e-mail / webhook when a round is ready or a round or DPO run ends
