from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import DomainError
from apps.pagerduty import subscriptions
from apps.pagerduty.errors import PagerDutyError
from apps.pagerduty.models import PagerDutyConnection


class Command(BaseCommand):
    help = (
        "A connection's PagerDuty webhook subscription. `subscribe NAME --url URL [--service-id P…|--team-id P…]` "
        "creates it at PagerDuty (every incident event type, the whole account unless filtered) and keeps its signing "
        "secret encrypted; `subscribe NAME --secret-from-env [--subscription-id P…]` keeps the secret of one made in "
        "PagerDuty's UI, read from PAGERDUTY_WEBHOOK_SECRET; `list NAME`; `ping NAME`; `unsubscribe NAME [--id P…]`. "
        "Secrets are never printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("command", choices=["subscribe", "list", "ping", "unsubscribe"])
        parser.add_argument("connection", help="Connection name, e.g. default")
        parser.add_argument("--url", help="Public URL PagerDuty delivers to: https://…/webhooks/pagerduty/NAME/")
        parser.add_argument("--service-id", default="", help="Only this service's incidents")
        parser.add_argument("--team-id", default="", help="Only this team's incidents")
        parser.add_argument("--event", action="append", dest="events", help="An event type (repeatable); default all")
        parser.add_argument(
            "--secret-from-env", action="store_true", help="Keep PAGERDUTY_WEBHOOK_SECRET instead of subscribing"
        )
        parser.add_argument("--subscription-id", default="", help="With --secret-from-env: its id at PagerDuty")
        parser.add_argument("--id", default="", help="unsubscribe: this subscription instead of the connection's")

    def handle(self, *args, command, connection, **opts):
        found = PagerDutyConnection.objects.filter(name=connection).first()
        if found is None:
            raise CommandError(f"No PagerDuty connection named {connection!r}")
        try:
            getattr(self, f"_{command}")(found, opts)
        except (DomainError, PagerDutyError) as exc:
            raise CommandError(str(exc)) from None

    def _subscribe(self, connection, opts):
        if opts["secret_from_env"]:
            subscriptions.webhook_secret_from_env(connection=connection, subscription_id=opts["subscription_id"])
            self.stdout.write(f"Stored the webhook secret of {connection.name} from {subscriptions.SECRET_ENV}.")
            return
        if not opts["url"]:
            raise CommandError("--url is required (or --secret-from-env for a subscription made in PagerDuty)")
        made = subscriptions.webhook_subscribe(
            connection=connection,
            url=opts["url"],
            service_id=opts["service_id"],
            team_id=opts["team_id"],
            events=opts["events"],
        )
        self.stdout.write(
            f"Subscribed {connection.name}: {made['id']} → {made['url']} ({len(made['events'])} event types, "
            f"filter {made['filter'].get('type')}). The signing secret is stored encrypted."
        )

    def _list(self, connection, opts):
        for item in subscriptions.webhook_subscriptions_list(connection=connection):
            mark = " (this connection's)" if item["id"] == connection.webhook_subscription_id else ""
            state = "active" if item["active"] and not item["temporarily_disabled"] else "disabled"
            self.stdout.write(f"{item['id']}\t{item['url']}\t{item['filter'].get('type', '')}\t{state}{mark}")

    def _ping(self, connection, opts):
        self.stdout.write(
            f"PagerDuty sends a test event to subscription {subscriptions.webhook_ping(connection=connection)}."
        )

    def _unsubscribe(self, connection, opts):
        removed = subscriptions.webhook_unsubscribe(connection=connection, subscription_id=opts["id"])
        self.stdout.write(f"Removed webhook subscription {removed} at PagerDuty.")
