from django.db import migrations

from apps.core.roles import grant_permissions


class Migration(migrations.Migration):
    dependencies = [("core", "0001_roles"), ("ops", "0001_i13b_heartbeat_and_metrics_permission")]
    operations = [grant_permissions({"PagerDuty admins": ["ops.view_metrics"]})]
