import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.urls import reverse

from apps.core.errors import DomainError
from apps.core.roles import ONCALL_MANAGERS, PAGERDUTY_ADMINS, RESPONDERS, RUNBOOK_AUTHORS, VIEWERS
from apps.incidents.models import Incident
from apps.incidents.services import incident_create, incident_update
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import Channel, PagerDutyConnection
from apps.pagerduty.services import channel_upsert, connection_upsert
from apps.pagerduty.subscriptions import webhook_subscribe

SANDBOX_TOKEN = "sandbox-token"
# The integration key of the stand-in's checkout service (PSVC001): events sent with it open incidents there.
SANDBOX_ROUTING_KEY = "5a4db0c0ffee4e0b9c1d2e3f4a5b6c7d"
DEMO_USERS = [
    ("viewer", VIEWERS),
    ("responder", RESPONDERS),
    ("author", RUNBOOK_AUTHORS),
    ("oncall", ONCALL_MANAGERS),
    ("pdadmin", PAGERDUTY_ADMINS),
]
DEMO_INCIDENTS = [
    # (title, summary, severity, environment, service, move to)
    (
        "Checkout API returns 500s",
        "Error rate above 5% on POST /checkout since 10:02 UTC",
        1,
        "production",
        "checkout",
        "Investigating",
    ),
    (
        "Search latency p99 over 2s",
        "Elasticsearch cluster yellow after node loss",
        3,
        "production",
        "search",
        "Investigating",
    ),
    ("Staging deploy failing", "Migrations time out on staging", 2, "staging", "deploy", None),
]


class Command(BaseCommand):
    help = (
        "First-run setup for `make run`: an admin user and one demo user per role, the `default` PagerDuty connection and "
        "the `monitoring` Events API channel (the local stand-in, or a real account from PAGERDUTY_* variables), the example runbooks and a few demo incidents. "
        "Safe to run again: it only creates what is missing, and leaves example runbooks edited since they were loaded alone."
    )

    def handle(self, *args, **options):
        user_model = get_user_model()
        if not user_model.objects.filter(is_superuser=True).exists():
            user_model.objects.create_superuser("admin", "admin@example.com", "admin")
            self.stdout.write("Created superuser admin / admin (demo only: change it)")
        for username, role in DEMO_USERS:
            if not user_model.objects.filter(username=username).exists():
                # Password = username, like admin/admin: a local demo, never a deployment.
                user = user_model.objects.create_user(username, f"{username}@example.com", username)
                user.groups.add(Group.objects.get(name=role))
                self.stdout.write(f"Created demo user {username} / {username} ({role})")

        if os.environ.get("PAGERDUTY_API_KEY"):
            call_command("pagerduty_connect", "default", "--from-env")
        elif (
            os.environ.get("PAGERDUTY_SANDBOX_URL") and not PagerDutyConnection.objects.filter(name="default").exists()
        ):
            url = os.environ["PAGERDUTY_SANDBOX_URL"]
            connection = connection_upsert(
                name="default", api_key=SANDBOX_TOKEN, from_email="sre@example.com", api_url=url, events_url=url
            )
            connection.service_mappings.update_or_create(service="", defaults={"pagerduty_service_id": "PSVC001"})
            self.stdout.write(f"Connection 'default' → local PagerDuty stand-in at {url}")
        if os.environ.get("PAGERDUTY_ROUTING_KEY"):
            call_command("pagerduty_channel", "monitoring", "--from-env")
        elif os.environ.get("PAGERDUTY_SANDBOX_URL") and not Channel.objects.filter(name="monitoring").exists():
            url = os.environ["PAGERDUTY_SANDBOX_URL"]
            channel_upsert(name="monitoring", routing_key=SANDBOX_ROUTING_KEY, events_url=url)
            self.stdout.write(f"Events API channel 'monitoring' → local PagerDuty stand-in at {url}")

        self._subscribe_to_the_stand_in()

        # Edits made in the admin survive a restart: a runbook changed since it was loaded is kept.
        call_command("load_runbooks", str(Path(settings.BASE_DIR) / "runbooks"), "--keep-edited", stdout=self.stdout)

        if not Incident.objects.exists():
            for title, summary, severity, environment, service, move_to in DEMO_INCIDENTS:
                incident = incident_create(
                    title=title,
                    summary=summary,
                    severity=severity,
                    environment=environment,
                    service=service,
                    owner="sre@example.com",
                    actor="demo",
                )
                if move_to:
                    # Queued now, run by the worker once it starts: the demo pages on first boot.
                    incident_update(incident_id=incident.pk, status=move_to, actor="demo")
            self.stdout.write(f"Created {len(DEMO_INCIDENTS)} demo incidents")

    def _subscribe_to_the_stand_in(self):
        """The stand-in starts empty with every `make run`: subscribe again, so what a person does
        there (POST /_sandbox/incidents/<id>/acknowledge) comes back here as webhooks."""
        url = os.environ.get("PAGERDUTY_SANDBOX_URL")
        connection = PagerDutyConnection.objects.filter(name="default", api_url=url).first() if url else None
        if connection is None:
            return
        hook = settings.SITE_URL + reverse("pagerduty-webhook", args=[connection.name])
        try:
            webhook_subscribe(connection=connection, url=hook)
        except (DomainError, PagerDutyError) as exc:
            self.stderr.write(f"Webhooks from the stand-in not subscribed: {exc}")
            return
        PagerDutyConnection.objects.filter(pk=connection.pk).update(pagerduty_resolve_resolves_incident=True)
        self.stdout.write(f"The stand-in delivers webhooks to {hook}; a PagerDuty resolve resolves our incident")
