import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import DomainError
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.services import connection_test, connection_upsert


class Command(BaseCommand):
    help = (
        "Create or update a PagerDuty connection. With --from-env, read PAGERDUTY_API_KEY, PAGERDUTY_FROM_EMAIL, "
        "PAGERDUTY_API_URL and PAGERDUTY_EVENTS_URL. The key is stored encrypted and never printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Connection name runbook steps refer to, e.g. default")
        parser.add_argument("--from-env", action="store_true")
        parser.add_argument("--api-key-env", default="PAGERDUTY_API_KEY", help="Variable holding the key")
        parser.add_argument("--from-email")
        parser.add_argument("--api-url")
        parser.add_argument("--events-url")
        parser.add_argument("--subdomain")
        parser.add_argument("--service-id", help="Default PagerDuty service for steps without service_id")
        parser.add_argument("--test", action="store_true", help="Test the connection after saving")

    def handle(self, *args, name, from_env, api_key_env, **opts):
        existing = PagerDutyConnection.objects.filter(name=name).first()
        # Keys come from the environment only: a key on the command line lands in shell history.
        api_key = os.environ.get(api_key_env, "").strip() or None
        from_email = opts["from_email"] or (os.environ.get("PAGERDUTY_FROM_EMAIL") if from_env else None)
        api_url = opts["api_url"] or (os.environ.get("PAGERDUTY_API_URL") if from_env else None)
        events_url = opts["events_url"] or (os.environ.get("PAGERDUTY_EVENTS_URL") if from_env else None)
        if existing is None and not api_key:
            raise CommandError(f"{api_key_env} is not set: a new connection needs an API key")
        if not (from_email or (existing and existing.from_email)):
            raise CommandError("A From email is required: --from-email or PAGERDUTY_FROM_EMAIL")
        try:
            connection = connection_upsert(
                name=name,
                api_key=api_key,
                from_email=from_email or existing.from_email,
                api_url=api_url or (existing.api_url if existing else ""),
                # A new api_url without an events_url takes the events host that goes with it.
                events_url=events_url or (existing.events_url if existing and not api_url else ""),
                subdomain=opts["subdomain"] or (existing.subdomain if existing else ""),
            )
        except DomainError as exc:
            raise CommandError(f"{exc.field}: {exc}" if exc.field else str(exc)) from exc
        except ValidationError as exc:
            problems = (
                [f"{field}: {message}" for field, messages in exc.message_dict.items() for message in messages]
                if hasattr(exc, "error_dict")
                else exc.messages
            )
            if existing is not None and not api_key and {"api_url", "events_url"} & set(getattr(exc, "error_dict", {})):
                problems.append(f"the key is read from {api_key_env}: set it to the key for the new URL")
            raise CommandError("Invalid connection:\n  " + "\n  ".join(problems)) from exc
        if opts["service_id"]:
            connection.service_mappings.update_or_create(
                service="", defaults={"pagerduty_service_id": opts["service_id"]}
            )
        self.stdout.write(
            f"{'Updated' if existing else 'Created'} PagerDuty connection {connection.name!r} → {connection.api_url}"
        )
        if opts["test"]:
            ok, message = connection_test(connection=connection)
            (self.stdout if ok else self.stderr).write(message)
            if not ok:
                raise CommandError("Connection test failed")
