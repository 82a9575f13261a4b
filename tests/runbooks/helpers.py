import json

import responses

from apps.incidents.services import incident_update
from apps.runbooks.services import runbook_upsert_from_spec
from tests.conftest import PD_URL

PAGE_STEP = {
    "key": "page",
    "name": "Create PagerDuty incident",
    "action": "pagerduty.create_incident",
    "connection": "default",
    "with": {
        "from": "{{Activity.owner}}",
        "title": "SEV{{Activity.severity}}: {{Activity.title}}",
        "summary": "{{Activity.summary}}",
        "url": "{{Activity.url}}",
        "service_id": "P1234AB",
        "incident_key": "ai-sre-{{Activity.id}}",
    },
}


def make_runbook(slug="page-on-critical", *, steps=None, trigger=None, conditions=None, enabled=True):
    runbook, _ = runbook_upsert_from_spec(
        spec={
            "slug": slug,
            "name": slug,
            "enabled": enabled,
            "trigger": trigger or {"on": "status_changed", "to": ["Investigating"]},
            "conditions": conditions or {},
            "steps": steps if steps is not None else [PAGE_STEP],
        }
    )
    return runbook


def pd_incident(incident_id="Q1ABCDEF", number=7, key="k", service_id="P1234AB", status="triggered"):
    return {
        "id": incident_id,
        "type": "incident",
        "incident_number": number,
        "status": status,
        "incident_key": key,
        "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}",
        "service": {"id": service_id, "type": "service_reference"},
    }


def add_create_ok(pd, **kwargs):
    pd.add(responses.POST, f"{PD_URL}/incidents", json={"incident": pd_incident(**kwargs)}, status=201)


def body(call) -> dict:
    return json.loads(call.request.body)


def writes(pd) -> list[tuple[str, str]]:
    return [
        (c.request.method, c.request.url.split("?")[0].removeprefix(PD_URL))
        for c in pd.calls
        if c.request.method != "GET"
    ]


def change_status(incident, status, capture):
    """Commit a status change and run what its commit queues (the dispatch, eagerly)."""
    with capture(execute=True):
        incident_update(incident_id=incident.pk, status=status, actor="test")
