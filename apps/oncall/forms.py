"""The sync wizard's steps. Forms validate and name what is wrong; the services do the work."""

from django import forms
from django.core.exceptions import ValidationError

from apps.core.errors import DomainError
from apps.oncall import services
from apps.oncall.importer import RESOURCE_LABELS, RESOURCE_TYPES
from apps.oncall.models import OncallTeam, SyncRun
from apps.pagerduty.models import DEFAULT_API_URL, PagerDutyConnection
from apps.pagerduty.services import connection_test
from apps.pagerduty.validators import validate_api_key, validate_pagerduty_url

NEW_CONNECTION_FIELDS = ("new_name", "new_api_key", "new_from_email", "new_api_url")


class ConnectionStepForm(forms.Form):
    connection = forms.ModelChoiceField(
        queryset=PagerDutyConnection.objects.all(),
        required=False,
        empty_label="— create a new connection below —",
        help_text="The PagerDuty account to import from.",
    )
    new_name = forms.SlugField(required=False, label="Name", help_text="Runbook steps refer to it by this name.")
    new_api_key = forms.CharField(
        required=False,
        label="REST API key",
        strip=True,
        validators=[validate_api_key],
        # Never rendered back, and the wizard never keeps it: the connection is created when this step passes.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    new_from_email = forms.EmailField(required=False, label="From email")
    new_api_url = forms.URLField(
        required=False,
        label="REST API URL",
        initial=DEFAULT_API_URL,
        validators=[validate_pagerduty_url],
        help_text="EU: https://api.eu.pagerduty.com",
    )
    test = forms.BooleanField(required=False, initial=True, label="Test the connection before continuing")

    def __init__(self, *args, run_test: bool = True, may_create_connection: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_test = run_test
        self.test_message = ""
        self.may_create_connection = may_create_connection
        if not may_create_connection:
            # Only PagerDuty admins set keys and URLs: the others choose among existing connections.
            for name in NEW_CONNECTION_FIELDS:
                del self.fields[name]
            self.fields["connection"].required = True
            self.fields["connection"].empty_label = None
        # The only connection there is is the one meant: preselected (still changeable to "new").
        only = list(PagerDutyConnection.objects.all()[:2])
        if len(only) == 1:
            self.fields["connection"].initial = only[0].pk

    def clean(self):
        data = super().clean()
        connection = data.get("connection")
        if not self.may_create_connection:
            if connection is None:
                return data  # "connection" is required: its error says so
            return self._tested(connection, data)
        new = [data.get(f) for f in ("new_name", "new_api_key", "new_from_email")]
        if connection is None:
            if not all(new):
                raise ValidationError("Choose a connection, or fill in name, API key and From email to create one.")
            if PagerDutyConnection.objects.filter(name=data["new_name"]).exists():
                self.add_error("new_name", "A connection with this name exists: choose it above instead.")
                return data
            connection = PagerDutyConnection(
                name=data["new_name"],
                api_key=data["new_api_key"],
                from_email=data["new_from_email"],
                api_url=(data.get("new_api_url") or DEFAULT_API_URL).rstrip("/"),
            )
        elif any(new):
            raise ValidationError("Either choose an existing connection or create a new one, not both.")
        return self._tested(connection, data)

    def _tested(self, connection: PagerDutyConnection, data: dict) -> dict:
        if data.get("test") and self.run_test:
            ok, message = connection_test(connection=connection)
            if not ok:
                raise ValidationError(f"Connection test failed: {message}")
            self.test_message = message
        return data


class ScopeStepForm(forms.Form):
    resources = forms.MultipleChoiceField(
        choices=[(r, RESOURCE_LABELS[r]) for r in RESOURCE_TYPES],
        initial=list(RESOURCE_TYPES),
        widget=forms.CheckboxSelectMultiple,
        label="Import",
    )
    teams = forms.ModelMultipleChoiceField(
        queryset=OncallTeam.objects.none(),
        required=False,
        label="Only these teams",
        help_text="Teams imported before. Leave empty for the whole account.",
    )
    team_ids = forms.CharField(
        required=False, label="Team ids", help_text="PagerDuty team ids, comma-separated (e.g. PTEAM01)."
    )
    query = forms.CharField(required=False, max_length=100, label="Name contains")
    team_roles = forms.BooleanField(
        required=False,
        label="Import team roles",
        help_text="One extra request per team (GET /teams/{id}/members). Membership is imported either way.",
    )
    window_days = forms.IntegerField(
        min_value=1,
        max_value=services.MAX_WINDOW_DAYS,
        initial=services.DEFAULT_WINDOW_DAYS,
        label="Schedule window (days)",
        help_text="Who is on call is rendered from today (UTC) for this many days.",
    )

    def __init__(self, *args, connection: PagerDutyConnection | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if connection is not None:
            self.fields["teams"].queryset = OncallTeam.objects.filter(connection=connection).order_by("name")

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        team_ids = [t.pagerduty_id for t in data.get("teams") or []]
        team_ids += [t.strip() for t in (data.get("team_ids") or "").split(",") if t.strip()]
        try:
            data["options"] = services.sync_options_clean(
                resources=data["resources"],
                team_ids=team_ids,
                query=data.get("query") or "",
                team_roles=data.get("team_roles") or False,
                window_days=data["window_days"],
            )
        except DomainError as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, str(exc))
        return data


class ReviewStepForm(forms.Form):
    sync_run = forms.IntegerField(widget=forms.HiddenInput)

    def __init__(self, *args, user=None, connection=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.connection = connection
        self.run: SyncRun | None = None

    def clean_sync_run(self):
        pk = self.cleaned_data["sync_run"]
        run = SyncRun.objects.filter(pk=pk).first()
        if run is None or (self.connection is not None and run.connection_id != self.connection.pk):
            raise ValidationError("This plan does not belong to this sync; start again.")
        if run.status == SyncRun.Status.PLANNING:
            # A plan waiting to try PagerDuty again says so (and when), rather than just "not yet".
            raise ValidationError(run.error or "The plan is still being computed; wait for it to finish.")
        if run.status == SyncRun.Status.FAILED:
            raise ValidationError(f"Planning failed: {run.error}")
        self.run = run
        return pk


class ConfirmStepForm(ReviewStepForm):
    delete_missing = forms.BooleanField(
        required=False,
        label="Delete what is gone from PagerDuty",
        help_text="Otherwise objects gone upstream are only flagged (deleted upstream at …) and kept.",
    )
    confirm = forms.BooleanField(required=True, label="Apply this plan")

    def clean_sync_run(self):
        pk = super().clean_sync_run()
        if self.run.status != SyncRun.Status.PLANNED:
            raise ValidationError(f"This plan is already {self.run.get_status_display()}.")
        return pk
