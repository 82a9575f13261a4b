"""`python manage.py pagerduty_sandbox`: serve the local PagerDuty stand-in until interrupted."""

import signal
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.sandbox import (
    ADMIN_EMAIL,
    DEFAULT_TOKEN,
    WELL_KNOWN,
    Faults,
    SandboxServer,
    SandboxState,
    seed_account,
)
from apps.sandbox.persistence import StateFile


def _statuses(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--error-statuses takes comma-separated HTTP statuses, got {value!r}") from None


class Command(BaseCommand):
    help = "Run the local PagerDuty stand-in (REST API, Events API v2, /_sandbox/ admin API) over HTTP."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument(
            "--token",
            action="append",
            dest="tokens",
            metavar="TOKEN",
            help=f"accepted REST API token; repeatable (default {DEFAULT_TOKEN})",
        )
        parser.add_argument("--users", type=int, default=20)
        parser.add_argument("--teams", type=int, default=3)
        parser.add_argument("--schedules", type=int, default=4)
        parser.add_argument("--escalation-policies", type=int, default=3)
        parser.add_argument("--services", type=int, default=4)
        parser.add_argument("--seed", type=int, default=1, help="same seed and sizes give identical data")
        parser.add_argument("--rate-limit-per-minute", type=int, default=960)
        parser.add_argument(
            "--events-rate-limit", type=int, default=120, help="Events API v2 events per window per routing key"
        )
        parser.add_argument("--events-rate-window-seconds", type=float, default=60.0)
        parser.add_argument("--no-teams-ability", action="store_true", help="answer 402 on /teams like small plans")
        parser.add_argument("--error-rate", type=float, default=0.0, help="fraction (0..1) of requests that fail")
        parser.add_argument("--error-statuses", default="500,503", help="statuses random failures use")
        parser.add_argument("--latency-ms", type=float, default=0, help="added to every request")
        parser.add_argument(
            "--lost-answer-rate",
            type=float,
            default=0.0,
            help="fraction (0..1) of requests carried out whose answer is then lost (connection dropped)",
        )
        parser.add_argument("--fault-seed", type=int, default=0, help="seed of the random-failure generator")
        parser.add_argument("--no-contract", action="store_true", help="skip the OpenAPI request check")
        parser.add_argument("--quiet", action="store_true", help="do not log each request")
        parser.add_argument(
            "--state-file",
            type=Path,
            help="keep incidents, notes and events in this JSON file across restarts (`make run`: var/sandbox-state.json)",
        )

    def handle(self, *args, **options):
        if options["rate_limit_per_minute"] < 1:
            raise CommandError("--rate-limit-per-minute must be at least 1")
        if options["events_rate_limit"] < 1 or options["events_rate_window_seconds"] <= 0:
            raise CommandError("--events-rate-limit and --events-rate-window-seconds must be positive")
        try:
            faults = Faults(
                error_rate=options["error_rate"],
                error_statuses=_statuses(options["error_statuses"]),
                latency_ms=options["latency_ms"],
                seed=options["fault_seed"],
                lost_answer_rate=options["lost_answer_rate"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        tokens = options["tokens"] or [DEFAULT_TOKEN]
        state = SandboxState(
            tokens=tokens,
            rate_limit_per_minute=options["rate_limit_per_minute"],
            teams_ability=not options["no_teams_ability"],
            faults=faults,
            contract=not options["no_contract"],
            events_rate_limit=options["events_rate_limit"],
            events_rate_window_seconds=options["events_rate_window_seconds"],
        )
        seed_account(
            state,
            users=options["users"],
            teams=options["teams"],
            schedules=options["schedules"],
            escalation_policies=options["escalation_policies"],
            services=options["services"],
            seed=options["seed"],
        )
        state_file = StateFile(state, options["state_file"]) if options["state_file"] else None
        restored = state_file.load() if state_file else None
        server = SandboxServer(state, host=options["host"], port=options["port"], log_requests=not options["quiet"])
        try:
            server.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from exc
        counts = state.counts()
        lines = [
            f"url: {server.url}",
            f"events_url: {server.events_url}",
            *(f"token: {token}" for token in tokens),
            f"admin_email: {ADMIN_EMAIL}",
            *(f"{name}: {value}" for name, value in WELL_KNOWN.items() if name not in ("admin_email", "priority_ids")),
            *(f"priority_id_{name}: {pid}" for name, pid in WELL_KNOWN["priority_ids"].items()),
            f"contract_check: {'on' if state.contract_enabled else 'skipped (' + str(state.contract_skip_reason) + ')'}",
            "directory: "
            + ", ".join(f"{counts[k]} {k}" for k in ("users", "teams", "schedules", "escalation_policies", "services")),
            f"admin_api: {server.url}/_sandbox/",
            *([restored] if restored else []),
        ]
        for line in lines:
            self.stdout.write(line)
        self.stdout.flush()
        if state_file:
            state_file.start()

        # SIGTERM (a supervisor stopping it) ends it like Ctrl-C: the state is saved, no traceback.
        def interrupt(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            if state_file:
                state_file.stop()
