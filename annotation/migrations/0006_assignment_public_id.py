# Every reservation gets a random public handle, its only annotator-facing name (finding 1 of the trust review: the
# sequential database id is ordered, so it stays internal). Existing rows get theirs from gen_random_uuid() (a
# volatile default: one value per row).

import uuid

import django.contrib.postgres.functions
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0004_prompt_text_finite_numbers"),
    ]

    operations = [
        migrations.AddField(
            model_name="assignment",
            name="public_id",
            field=models.UUIDField(
                db_default=django.contrib.postgres.functions.RandomUUID(), default=uuid.uuid4, editable=False,
                unique=True,
            ),
        ),
    ]
