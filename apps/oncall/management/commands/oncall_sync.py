"""python manage.py oncall_sync default --plan | --apply [options]: the wizard, from the command line.

Runs in this process (no Celery): --plan fetches and stores a plan, --apply plans and applies it (or
applies a stored plan with --sync-run N).
"""

import json
import time

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import DomainError
from apps.oncall import services
from apps.oncall.importer import RESOURCE_TYPES
from apps.oncall.models import SyncRun
from apps.pagerduty.selectors import connection_get


class Command(BaseCommand):
    help = "Import users, teams, schedules, escalation policies and services from PagerDuty: plan, then apply."

    def add_arguments(self, parser):
        parser.add_argument("connection", help="Name of the PagerDuty connection (e.g. default)")
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--plan", action="store_true", help="Fetch and show what would change; write nothing")
        mode.add_argument("--apply", action="store_true", help="Plan and apply (or apply --sync-run N)")
        parser.add_argument(
            "--resources",
            default=",".join(RESOURCE_TYPES),
            help=f"Comma-separated subset of {','.join(RESOURCE_TYPES)} (default: all)",
        )
        parser.add_argument("--team", action="append", default=[], help="Only this team id (repeatable)")
        parser.add_argument("--query", default="", help="Only objects whose name contains this")
        parser.add_argument("--team-roles", action="store_true", help="Also import team roles (one request per team)")
        parser.add_argument("--window-days", type=int, default=services.DEFAULT_WINDOW_DAYS)
        parser.add_argument("--delete-missing", action="store_true", help="Delete what is gone upstream (else flag)")
        parser.add_argument(
            "--sync-run",
            type=int,
            help="With --apply: apply this stored plan instead of a new one (a failed apply is retried as is)",
        )
        parser.add_argument("--json", action="store_true", help="Print the plan or report as JSON")

    def handle(self, *args, **opts):
        try:
            connection = connection_get(name=opts["connection"])
            if opts["sync_run"]:
                if not opts["apply"]:
                    raise CommandError("--sync-run goes with --apply")
                run = SyncRun.objects.filter(pk=opts["sync_run"], connection=connection).first()
                if run is None:
                    raise CommandError(f"No sync run {opts['sync_run']} for connection {connection.name!r}")
                if run.status == SyncRun.Status.FAILED and run.apply_requested_at:
                    run = services.sync_run_retry_apply(sync_run_id=run.pk)
                    self.stderr.write(f"Applying sync #{run.pk} again, with the plan it had …")
                    self._finish_apply(run, as_json=opts["json"])
                    return
            else:
                options = services.sync_options_clean(
                    resources=[r.strip() for r in opts["resources"].split(",") if r.strip()],
                    team_ids=opts["team"],
                    query=opts["query"],
                    team_roles=opts["team_roles"],
                    window_days=opts["window_days"],
                )
                run = services.sync_run_create(connection=connection, options=options, trigger=SyncRun.Trigger.COMMAND)
                self.stderr.write(f"Planning sync #{run.pk} from {connection.api_url} …")
                run = self._plan(run)
        except DomainError as exc:
            raise CommandError(str(exc)) from exc
        if run.status == SyncRun.Status.FAILED:
            raise CommandError(f"Sync #{run.pk} failed: {run.error}")
        if opts["plan"]:
            self._print_plan(run, as_json=opts["json"])
            self.stdout.write(f"Sync #{run.pk} planned. Apply it with: --apply --sync-run {run.pk}")
            return
        if run.status != SyncRun.Status.PLANNED:
            raise CommandError(f"Sync #{run.pk} is {run.status}; only a planned sync can be applied (once).")
        if not opts["json"]:
            self._print_plan(run, as_json=False)
        run, _queued = services.sync_run_request_apply(sync_run_id=run.pk, delete_missing=opts["delete_missing"])
        self._finish_apply(run, as_json=opts["json"])

    def _plan(self, run: SyncRun) -> SyncRun:
        """Plan in this process, waiting here when PagerDuty's trouble outlasts the client's retries."""
        run = services.sync_run_plan(sync_run_id=run.pk)
        while (wait := services.sync_run_wait_seconds(run=run)) is not None:
            self.stderr.write(f"{run.error or 'Another process is planning this run.'} Waiting {wait:.0f} s …")
            time.sleep(wait)
            run = services.sync_run_plan(sync_run_id=run.pk)
        return run

    def _finish_apply(self, run: SyncRun, *, as_json: bool) -> None:
        run = services.sync_run_apply(sync_run_id=run.pk)
        while (wait := services.sync_run_wait_seconds(run=run)) is not None:
            self.stderr.write(f"{run.error or 'Another process is applying this run.'} Waiting {wait:.0f} s …")
            time.sleep(wait)
            run = services.sync_run_apply(sync_run_id=run.pk)
        if run.status != SyncRun.Status.APPLIED:
            raise CommandError(f"Sync #{run.pk} failed: {run.error}")
        if as_json:
            self.stdout.write(json.dumps(run.report, indent=2))
            return
        self.stdout.write("Applied:")
        for key in RESOURCE_TYPES:
            r = run.report["resources"].get(key)
            if r:
                self.stdout.write(
                    f"  {r['label']:<20} created {r['created']:>6}  updated {r['updated']:>6}  unchanged "
                    f"{r['unchanged']:>6}  flagged gone {r['gone_flagged']:>5}  deleted {r['deleted']:>5}"
                )
        self.stdout.write(self.style.SUCCESS(f"Sync #{run.pk} applied in {run.report['apply_seconds']} s."))

    def _print_plan(self, run: SyncRun, *, as_json: bool) -> None:
        plan = run.plan
        if as_json:
            self.stdout.write(json.dumps({k: v for k, v in plan.items() if k != "records"}, indent=2))
            return
        fetch = plan["fetch"]
        self.stdout.write(
            f"Fetched with {fetch['requests']} requests (minimum {fetch['minimum']}, ratio {fetch['ratio']}; "
            f"partitioning {fetch['partition_requests']})."
        )
        for key in RESOURCE_TYPES:
            section = plan["resources"].get(key)
            if not section:
                continue
            c = section["counts"]
            gone = c["gone"] if section["gone_checked"] else "not checked"
            incomplete = "" if section["complete"] else "  INCOMPLETE"
            self.stdout.write(
                f"  {section['label']:<20} create {c['create']:>6}  update {c['update']:>6}  unchanged "
                f"{c['unchanged']:>6}  gone {gone}{incomplete}"
            )
            for item in section["update"][:20]:
                fields = ", ".join(ch["field"] for ch in item["changes"])
                self.stdout.write(f"      ~ {item['name']} ({item['id']}): {fields}")
            for item in section["gone"][:20]:
                self.stdout.write(f"      - {item['name']} ({item['id']})")
        for w in plan["warnings"]:
            self.stdout.write(self.style.WARNING(f"  warning [{w['code']}]: {w['message']}"))
