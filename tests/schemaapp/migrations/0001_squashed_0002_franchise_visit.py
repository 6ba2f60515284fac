from django.db import migrations, models


class Migration(migrations.Migration):
    """Both files beside it in one, as ``squashmigrations`` writes it: a database that applied them keeps
    their names in django_migrations, one migrated since records them too."""

    replaces = [("schemaapp", "0001_initial"), ("schemaapp", "0002_franchise_visit")]

    initial = True

    dependencies = [("contenttypes", "0002_remove_content_type_name")]

    operations = [
        migrations.CreateModel(
            name="Place",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("address", models.TextField(blank=True)),
            ],
        ),
        migrations.CreateModel(
            name="Restaurant",
            fields=[
                (
                    "place_ptr",
                    models.OneToOneField(
                        auto_created=True,
                        on_delete=models.deletion.CASCADE,
                        parent_link=True,
                        primary_key=True,
                        serialize=False,
                        to="schemaapp.place",
                    ),
                ),
                ("serves_pizza", models.BooleanField(default=False)),
                ("rating", models.IntegerField(null=True)),
            ],
            bases=("schemaapp.place",),
        ),
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
