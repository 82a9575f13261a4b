"""Admin wizard: connection → scope → review the plan → confirm; the apply then runs on Celery.

The plan is computed by a Celery task as soon as the scope step passes (it may take a minute on a
large account at PagerDuty's rate limit); the review step waits for it. Nothing secret is kept in
the wizard's session storage: a new connection is created, and its key dropped from the step data,
as soon as the first step passes.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from formtools.wizard.views import SessionWizardView

from apps.core.query_params import ascii_integer
from apps.oncall import services, tasks
from apps.oncall.forms import ConfirmStepForm, ConnectionStepForm, ReviewStepForm, ScopeStepForm
from apps.oncall.importer import RESOURCE_TYPES
from apps.oncall.models import SyncRun
from apps.pagerduty.models import PagerDutyConnection
from apps.pagerduty.services import connection_upsert

CONNECTION, SCOPE, REVIEW, CONFIRM = "connection", "scope", "review", "confirm"
APPLY_PERMISSION = "oncall.apply_syncrun"
CREATE_CONNECTION_PERMISSION = "pagerduty.add_pagerdutyconnection"


class SyncWizardView(SessionWizardView):
    form_list = [
        (CONNECTION, ConnectionStepForm),
        (SCOPE, ScopeStepForm),
        (REVIEW, ReviewStepForm),
        (CONFIRM, ConfirmStepForm),
    ]
    template_name = "admin/oncall/sync/wizard.html"
    model_admin = None
    step_titles = {
        CONNECTION: "Choose a PagerDuty connection",
        SCOPE: "Choose what to import",
        REVIEW: "Review the plan",
        CONFIRM: "Confirm",
    }

    # --- wiring ---------------------------------------------------------------------------------

    def _connection(self) -> PagerDutyConnection | None:
        data = self.storage.get_step_data(CONNECTION) or {}
        pk = data.get(f"{CONNECTION}-connection")
        return PagerDutyConnection.objects.filter(pk=pk).first() if pk else None

    def _sync_run_id(self) -> int | None:
        return (self.storage.extra_data or {}).get("sync_run_id")

    def get_form_kwargs(self, step=None):
        if step == CONNECTION:
            # The test already ran when the step was posted; revalidation at the end need not call PagerDuty again.
            return {
                "run_test": not getattr(self, "_revalidating", False),
                "may_create_connection": self.request.user.has_perm(CREATE_CONNECTION_PERMISSION),
            }
        if step == SCOPE:
            return {"connection": self._connection()}
        if step in (REVIEW, CONFIRM):
            return {"user": self.request.user, "connection": self._connection()}
        return {}

    def get_form_initial(self, step):
        if step in (REVIEW, CONFIRM):
            return {"sync_run": self._sync_run_id()}
        return super().get_form_initial(step)

    def get_context_data(self, form, **kwargs):
        context = super().get_context_data(form=form, **kwargs)
        context.update(self.model_admin.admin_site.each_context(self.request))
        run = (
            SyncRun.objects.filter(pk=self._sync_run_id()).first() if self.steps.current in (REVIEW, CONFIRM) else None
        )
        context.update(
            {
                "title": "Sync from PagerDuty",
                "subtitle": self.step_titles[self.steps.current],
                "opts": self.model_admin.model._meta,
                "step_titles": [(key, self.step_titles[key]) for key in self.get_form_list()],
                "connection": self._connection(),
                "sync_run": run,
                "plan": run.plan if run else None,
                "resource_order": RESOURCE_TYPES,
                "progress_url": reverse("admin:oncall_sync_progress", args=[run.pk]) if run else "",
                "may_apply": self.request.user.has_perm(APPLY_PERMISSION),
                "sync_run_progress": progress_rows(run) if run else [],
            }
        )
        return context

    # --- steps ----------------------------------------------------------------------------------

    def post(self, *args, **kwargs):
        posted_step = self.request.POST.get(f"{self.prefix}-current_step")
        applying = posted_step == CONFIRM and "wizard_goto_step" not in self.request.POST
        if applying and not self.request.user.has_perm(APPLY_PERMISSION):
            raise PermissionDenied("Applying a sync plan needs the oncall.apply_syncrun permission.")
        if self.storage.current_step is None and posted_step == CONFIRM:
            # The wizard was finished by an earlier submit of this same page (double click, back + resubmit).
            run_id = self.request.POST.get(f"{CONFIRM}-sync_run", "")
            run_pk = ascii_integer(run_id)
            run = SyncRun.objects.filter(pk=run_pk).first() if run_pk is not None else None
            if run is not None:
                messages.info(self.request, f"Sync #{run.pk} was already confirmed; it is not applied twice.")
                return HttpResponseRedirect(reverse("admin:oncall_sync_run", args=[run.pk]))
        return super().post(*args, **kwargs)

    def process_step(self, form):
        data = super().process_step(form)
        prefix = self.get_form_prefix()
        if self.steps.current == CONNECTION:
            connection = form.cleaned_data.get("connection")
            if connection is None:
                if not self.request.user.has_perm(CREATE_CONNECTION_PERMISSION):
                    raise PermissionDenied("Creating a connection needs pagerduty.add_pagerdutyconnection.")
                connection = connection_upsert(
                    name=form.cleaned_data["new_name"],
                    api_key=form.cleaned_data["new_api_key"],
                    from_email=form.cleaned_data["new_from_email"],
                    api_url=form.cleaned_data.get("new_api_url") or "",
                )
                if form.test_message:
                    # The test ran before the row existed; record its outcome now that it does.
                    PagerDutyConnection.objects.filter(pk=connection.pk).update(
                        last_tested_at=timezone.now(), last_test_ok=True, last_test_message=form.test_message
                    )
                messages.success(self.request, f"Connection {connection.name!r} created.")
            if form.test_message:
                messages.success(self.request, form.test_message)
            # Keep only the chosen connection: the API key must not sit in the session.
            # Lists, as the storage rebuilds a MultiValueDict from what it is given.
            return {f"{prefix}-connection": [str(connection.pk)]}
        if self.steps.current == SCOPE:
            self._start_plan(form.cleaned_data["options"])
        return data

    def _start_plan(self, options: dict) -> None:
        connection = self._connection()
        current = SyncRun.objects.filter(pk=self._sync_run_id()).first()
        reusable = (
            current is not None
            and current.connection_id == connection.pk
            and current.options == options
            and current.status in (SyncRun.Status.PLANNING, SyncRun.Status.PLANNED)
        )
        if reusable:
            return
        run = services.sync_run_create(
            connection=connection, options=options, created_by=self.request.user, trigger=SyncRun.Trigger.WIZARD
        )
        self.storage.extra_data = {**(self.storage.extra_data or {}), "sync_run_id": run.pk}
        transaction.on_commit(lambda: tasks.sync_plan.delay(run.pk))

    def render_done(self, form, **kwargs):
        self._revalidating = True
        return super().render_done(form, **kwargs)

    def done(self, form_list, form_dict=None, **kwargs):
        if not self.request.user.has_perm(APPLY_PERMISSION):
            raise PermissionDenied("Applying a sync plan needs the oncall.apply_syncrun permission.")
        confirm = form_dict[CONFIRM]
        run, queued = services.sync_run_request_apply(
            sync_run_id=confirm.cleaned_data["sync_run"], delete_missing=confirm.cleaned_data["delete_missing"]
        )
        if queued:
            transaction.on_commit(lambda: tasks.sync_apply.delay(run.pk))
            messages.success(self.request, f"Sync #{run.pk} is being applied.")
        else:
            messages.info(self.request, f"Sync #{run.pk} was already confirmed; it is not applied twice.")
        return HttpResponseRedirect(reverse("admin:oncall_sync_run", args=[run.pk]))


def progress_rows(run: SyncRun) -> list[dict]:
    """done/total per resource for the progress bars (the page and its JSON poll)."""
    rows = []
    for key, value in ((run.progress or {}).get("resources") or {}).items():
        done, total = value.get("done") or 0, value.get("total")
        percent = int(100 * done / total) if total else (100 if total == 0 else None)
        rows.append({"key": key, "done": done, "total": total, "percent": percent})
    return rows
