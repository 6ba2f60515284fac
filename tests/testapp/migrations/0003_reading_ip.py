from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0002_reading")]

    operations = [
        migrations.AddField(model_name="reading", name="ip", field=models.GenericIPAddressField(null=True)),
    ]
