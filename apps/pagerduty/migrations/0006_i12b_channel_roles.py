"""Events API channels: Viewers read them (never the key), PagerDuty admins manage and test them."""

from django.db import migrations

from apps.core.roles import grant_permissions


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_roles"),
        ("pagerduty", "0005_i12b_events_channel"),
    ]

    operations = [
        grant_permissions(
            {
                "Viewers": ["pagerduty.view_channel"],
                "Responders": ["pagerduty.view_channel"],
                "Runbook authors": ["pagerduty.view_channel"],
                "On-call managers": ["pagerduty.view_channel"],
                "PagerDuty admins": [
                    "pagerduty.view_channel",
                    "pagerduty.add_channel",
                    "pagerduty.change_channel",
                    "pagerduty.delete_channel",
                    "pagerduty.test_channel",
                ],
            }
        )
    ]
