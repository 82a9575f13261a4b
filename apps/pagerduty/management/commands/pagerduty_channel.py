import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import DomainError
from apps.pagerduty.models import Channel
from apps.pagerduty.services import channel_test, channel_upsert, default_event_source


class Command(BaseCommand):
    help = (
        "Create or update an Events API v2 channel. With --from-env, read PAGERDUTY_ROUTING_KEY and "
        "PAGERDUTY_EVENTS_URL. The routing key is stored encrypted and never printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Channel name event steps refer to (`channel:`), e.g. monitoring")
        parser.add_argument("--from-env", action="store_true", help="Read PAGERDUTY_EVENTS_URL too")
        parser.add_argument("--routing-key-env", default="PAGERDUTY_ROUTING_KEY", help="Variable holding the key")
        parser.add_argument("--events-url")
        parser.add_argument("--source", help="Default payload.source (default: the host of SITE_URL)")
        parser.add_argument("--prefix", help="Summary prefix, e.g. '[checkout] ' (default: none)")
        parser.add_argument("--test", action="store_true", help="Send a trigger and a resolve after saving")

    def handle(self, *args, name, from_env, routing_key_env, **opts):
        existing = Channel.objects.filter(name=name).first()
        # Keys come from the environment only: a key on the command line lands in shell history.
        routing_key = os.environ.get(routing_key_env, "").strip() or None
        events_url = opts["events_url"] or (os.environ.get("PAGERDUTY_EVENTS_URL") if from_env else None)
        if existing is None and not routing_key:
            raise CommandError(f"{routing_key_env} is not set: a new channel needs a routing key")
        source = opts["source"]
        if source is None:
            source = existing.default_source if existing else default_event_source()
        prefix = opts["prefix"]
        if prefix is None:
            prefix = existing.summary_prefix if existing else ""
        try:
            channel = channel_upsert(
                name=name,
                routing_key=routing_key,
                events_url=events_url or (existing.events_url if existing else ""),
                summary_prefix=prefix,
                default_source=source,
            )
        except DomainError as exc:
            raise CommandError(f"{exc.field}: {exc}" if exc.field else str(exc)) from exc
        except ValidationError as exc:
            problems = (
                [f"{field}: {message}" for field, messages in exc.message_dict.items() for message in messages]
                if hasattr(exc, "error_dict")
                else exc.messages
            )
            if existing is not None and not routing_key and "events_url" in getattr(exc, "error_dict", {}):
                problems.append(f"the key is read from {routing_key_env}: set it to the key for the new URL")
            raise CommandError("Invalid channel:\n  " + "\n  ".join(problems)) from exc
        self.stdout.write(
            f"{'Updated' if existing else 'Created'} Events API channel {channel.name!r} → {channel.events_url} "
            f"(source {channel.default_source or '(SITE_URL host)'!r}, prefix {channel.summary_prefix!r})"
        )
        if opts["test"]:
            ok, message = channel_test(channel=channel)
            (self.stdout if ok else self.stderr).write(message)
            if not ok:
                raise CommandError("Channel test failed")
