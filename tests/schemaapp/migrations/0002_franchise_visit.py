from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("schemaapp", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Franchise",
            fields=[
                (
                    "restaurant_ptr",
                    models.OneToOneField(
                        auto_created=True,
                        on_delete=models.deletion.CASCADE,
                        parent_link=True,
                        primary_key=True,
                        serialize=False,
                        to="schemaapp.restaurant",
                    ),
                ),
                ("brand", models.CharField(max_length=50, unique=True)),
            ],
            bases=("schemaapp.restaurant",),
        ),
        migrations.CreateModel(
            name="Visit",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("object_id", models.PositiveIntegerField(null=True)),
                ("note", models.TextField(blank=True)),
                (
                    "content_type",
                    models.ForeignKey(
                        null=True, on_delete=models.deletion.CASCADE, to="contenttypes.contenttype"
                    ),
                ),
                (
                    "place",
                    models.ForeignKey(
                        db_constraint=False, null=True, on_delete=models.deletion.DO_NOTHING, to="schemaapp.place"
                    ),
                ),
            ],
        ),
    ]
