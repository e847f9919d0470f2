"""Prompt text per group (edits never rewrite history), finite numbers only, and an admin role without account rights.

Before the constraint, stored rows are repaired: a flaw time that is NaN, infinite or negative loses its time (the
mark stays); a playback coverage outside [0, 1] cannot be stored (existing constraint). ``manage.py check_numbers``
reports any non-finite value left in a float column."""

from django.db import migrations, models
from django.db.models import Q


def clear_non_finite_flaw_times(apps, schema_editor):
    FlawMark = apps.get_model("annotation", "FlawMark")
    FlawMark.objects.filter(Q(time_s__gte=float("inf")) | Q(time_s__lt=0)).update(time_s=None)


def admin_role_without_account_rights(apps, schema_editor):
    """The admin role held every permission, auth.change_user included (so it could make superusers): keep its
    annotation rights, let it only view users and groups."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    admin = Group.objects.filter(name="admin").first()
    if admin is None:
        return
    admin.permissions.remove(*Permission.objects.filter(content_type__app_label__in=["auth", "admin", "contenttypes",
                                                                                    "sessions", "knox", "axes"]))
    admin.permissions.add(*Permission.objects.filter(content_type__app_label="auth",
                                                     codename__in=["view_user", "view_group"]))


class Migration(migrations.Migration):

    dependencies = [
        ("annotation", "0003_dporun_manifest_export"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.AddField(
            model_name="candidategroup",
            name="prompt_text",
            field=models.TextField(blank=True, db_default="", default=""),
        ),
        migrations.RunPython(clear_non_finite_flaw_times, migrations.RunPython.noop),
        migrations.RunPython(admin_role_without_account_rights, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="flawmark",
            constraint=models.CheckConstraint(
                condition=models.Q(("time_s__isnull", True), ("time_s__lt", float("inf")), _connector="OR"),
                name="flaw_time_finite",
            ),
        ),
    ]
