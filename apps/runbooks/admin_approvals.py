"""Approvals in the admin: pending approvals on the run page, on the incident page and in a list,
with approve and reject buttons for the people who may decide (apps.runbooks.waits decides).

The run and incident pages are Django change forms, so their buttons use `formaction`: they post
the page's own form (its CSRF token included) to the approve or reject view, which reads only the
comment and `next`.
"""

from contextvars import ContextVar
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from apps.core.errors import DomainError
from apps.core.permissions import admin_permission_required
from apps.runbooks import selectors, waits
from apps.runbooks.models import RunbookRun, RunStatus

APPROVE_PERMISSION = "runbooks.approve_runbookrun"
VIEW_RUN_PERMISSION = "runbooks.view_runbookrun"

# The person looking at the page, for read-only fields (which Django calls with the object only).
_current_request = ContextVar("approvals_current_request", default=None)


def _comment_name(step_run) -> str:
    return f"approval_comment_{step_run.run_id}"


def approval_html(request, step_run, *, next_url: str, own_form: bool) -> str:
    """One pending approval: what is asked, of whom, until when; the buttons if this person may decide."""
    rendered = step_run.rendered or {}
    run = step_run.run
    left = max(int((step_run.wait_until - timezone.now()).total_seconds() // 60), 0) if step_run.wait_until else 0
    summary = format_html(
        '<p><strong>{}</strong></p><p>Run <a href="{}">#{}</a> of <em>{}</em> on {} waits at step <code>{}</code> '
        "for approval by <strong>{}</strong>; {} min left, then {}.</p>",
        rendered.get("message") or "Approve to continue the run.",
        reverse("admin:runbooks_runbookrun_change", args=[run.pk]),
        run.pk,
        run.runbook,
        run.incident.short_id,
        step_run.key,
        rendered.get("approvers") or "Responders",
        left,
        "it fails" if rendered.get("on_timeout", "fail") == "fail" else "it continues",
    )
    if request is None or not waits.may_approve(user=request.user, step_run=step_run):
        return summary
    urls = {
        verb: reverse(f"admin:runbooks_runbookrun_{verb}", args=[run.pk]) + "?" + _query(next_url)
        for verb in ("approve", "reject")
    }
    comment = format_html(
        '<textarea name="{}" rows="2" cols="60" maxlength="{}" placeholder="Comment (optional)"></textarea><br>',
        _comment_name(step_run),
        waits.COMMENT_MAX,
    )
    if own_form:
        buttons = format_html(
            '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
            '<button type="submit" class="button default" formaction="{}">Approve</button> '
            '<button type="submit" class="button" formaction="{}">Reject</button>',
            get_token(request),
            urls["approve"],
            urls["reject"],
        )
        return format_html('{}<form method="post">{}{}</form>', summary, comment, buttons)
    buttons = format_html(
        '<button type="submit" class="button default" formaction="{}" formmethod="post" formnovalidate>Approve</button> '
        '<button type="submit" class="button" formaction="{}" formmethod="post" formnovalidate>Reject</button>',
        urls["approve"],
        urls["reject"],
    )
    return format_html("{}{}{}", summary, comment, buttons)


def _query(next_url: str) -> str:
    return urlencode({"next": next_url})


def _safe_next(request, default: str) -> str:
    candidate = request.GET.get("next") or request.POST.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()}):
        return candidate
    return default


class RenderWithRequest:
    """Keeps the request reachable by read-only fields while the change page renders."""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        token = _current_request.set(request)
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
            return response
        finally:
            _current_request.reset(token)


class RunApprovalAdminMixin(RenderWithRequest):
    """For RunbookRunAdmin: the run page shows its pending approval; approve, reject and the list."""

    def get_urls(self):
        guarded = self.admin_site.admin_view
        return [
            path("approvals/", guarded(self.pending_approvals_view), name="runbooks_runbookrun_approvals"),
            path("<path:object_id>/approve/", guarded(self.approve_view), name="runbooks_runbookrun_approve"),
            path("<path:object_id>/reject/", guarded(self.reject_view), name="runbooks_runbookrun_reject"),
            *super().get_urls(),
        ]

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if obj is not None and obj.status == RunStatus.WAITING:
            fields.insert(0, "pending_approval")
        return fields

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "pending_approval"]

    def pending_approval(self, obj):
        request = _current_request.get()
        step_run = selectors.approval_pending_for_run(run=obj)
        if step_run is None:
            wait = obj.step_runs.filter(status=RunStatus.WAITING).first()
            return f"Waiting at step {wait.key!r} ({wait.action})" if wait else "—"
        return approval_html(request, step_run, next_url=request.get_full_path() if request else "", own_form=False)

    pending_approval.short_description = "Waiting for"

    @admin_permission_required(VIEW_RUN_PERMISSION)
    def pending_approvals_view(self, request):
        pending = selectors.approvals_pending()
        rows = [approval_html(request, s, next_url=request.get_full_path(), own_form=True) for s in pending]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Pending approvals",
            "rows": rows,
            "limit": selectors.PENDING_APPROVALS_LIMIT,
        }
        return TemplateResponse(request, "admin/runbooks/runbookrun/approvals.html", context)

    @admin_permission_required(APPROVE_PERMISSION)
    def approve_view(self, request, object_id):
        return self._decide(request, object_id, approve=True)

    @admin_permission_required(APPROVE_PERMISSION)
    def reject_view(self, request, object_id):
        return self._decide(request, object_id, approve=False)

    def _decide(self, request, object_id, *, approve: bool):
        if not (object_id.isascii() and object_id.isdigit() and len(object_id) < 12):
            raise Http404("No such run")
        run = RunbookRun.objects.filter(pk=int(object_id)).first()
        if run is None:
            raise Http404("No such run")
        back = _safe_next(request, reverse("admin:runbooks_runbookrun_change", args=[run.pk]))
        if request.method != "POST":
            return redirect(back)
        comment = request.POST.get(f"approval_comment_{run.pk}", request.POST.get("comment", ""))
        try:
            waits.approval_decide(run_id=run.pk, user=request.user, approve=approve, comment=comment)
        except DomainError as exc:
            self.message_user(request, f"Run {run.pk}: {exc}", messages.ERROR)
        else:
            self.message_user(
                request,
                f"Run {run.pk}: approved, the run continues"
                if approve
                else f"Run {run.pk}: rejected, the approval step fails",
                messages.SUCCESS,
            )
        return redirect(back)


class IncidentApprovalAdminMixin(RenderWithRequest):
    """For the incident admin: the incident page lists its runs' pending approvals with the buttons."""

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if obj is not None and selectors.approvals_pending(incident=obj):
            fields.insert(0, "pending_approvals")
        return fields

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "pending_approvals"]

    def pending_approvals(self, obj):
        request = _current_request.get()
        next_url = request.get_full_path() if request else ""
        items = [
            approval_html(request, s, next_url=next_url, own_form=False)
            for s in selectors.approvals_pending(incident=obj)
        ]
        return format_html_join("", '<div class="rb-approval">{}</div>', ((item,) for item in items)) or "—"

    pending_approvals.short_description = "Pending approvals"
