"""Roles as groups (annotator, reviewer, researcher, admin), the 11 eval categories and the flaw taxonomy."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from annotation.defaults import CATEGORIES, FLAW_TAGS, ROLE_PERMISSIONS


def forwards(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        if perms == "__all__":
            group.permissions.set(Permission.objects.all())
        elif perms == "__all_annotation__":
            group.permissions.set(Permission.objects.filter(content_type__app_label__in=["annotation", "django_celery_results"]))
        else:
            group.permissions.set(Permission.objects.filter(content_type__app_label="annotation", codename__in=perms))
    Category = apps.get_model("annotation", "Category")
    for slug, name in CATEGORIES:
        Category.objects.get_or_create(slug=slug, defaults={"name": name})
    FlawTag = apps.get_model("annotation", "FlawTag")
    for order, (slug, name) in enumerate(FLAW_TAGS):
        FlawTag.objects.get_or_create(slug=slug, defaults={"name": name, "order": order})


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_celery_results", "0011_taskresult_periodic_task_name"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
