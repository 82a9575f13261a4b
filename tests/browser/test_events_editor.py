"""A person builds an Events API v2 runbook in the editor: the channel offered by name, custom
details typed as a JSON mapping and saved as one, the dedup key of the trigger picked for the
resolve, and the preview warning that the alert would be resolved at once."""

import pytest

from apps.pagerduty.services import channel_upsert
from apps.runbooks import loader
from apps.runbooks.models import Runbook
from apps.sandbox import CHECKOUT_INTEGRATION_KEY
from tests.browser.test_runbook_editor import (  # noqa: F401  (stand_in is a fixture)
    Var,
    add_step,
    compose,
    field_input,
    fill,
    runbook_header,
    save_and_continue,
    stand_in,
    wait_for_preview,
)

pytestmark = pytest.mark.browser


def test_trigger_and_resolve_an_alert_from_the_editor(page, stand_in):  # noqa: F811
    _, server = stand_in
    channel_upsert(name="monitoring", routing_key=CHECKOUT_INTEGRATION_KEY, events_url=server.url)
    runbook_header(page, slug="alerting", name="Alerting", trigger_on="manual")
    alert = add_step(page, "Trigger PagerDuty Alert (Events API v2)", key="alert", name="Alert")
    assert field_input(alert, "channel").get_attribute("list") == "rb-channels"
    assert page.locator('#rb-channels option[value="monitoring"]').count() == 1
    fill(field_input(alert, "channel"), "monitoring")
    fill(field_input(alert, "custom_details"), '{"runbook": "alerting", "team": "sre"}')
    clear = add_step(page, "Resolve PagerDuty Alert (Events API v2)", key="clear", name="Clear")
    fill(field_input(clear, "channel"), "monitoring")
    compose(page, clear, "dedup_key", Var("steps.alert.dedup_key"))
    wait_for_preview(page)

    alert_preview = alert.locator(".rb-preview")
    assert "derived from the channel and the summary" in alert_preview.locator(".rb-derived-dedup").inner_text()
    body = alert_preview.locator(".rb-body").inner_text()
    assert '"routing_key": "***redacted***"' in body and '"team": "sre"' in body and "incident_url" in body
    assert "no wait in between" in clear.locator(".rb-preview").inner_text()

    save_and_continue(page)
    runbook = Runbook.objects.get(slug="alerting")
    steps = loader.runbook_to_spec(runbook)["steps"]
    assert steps[0]["with"]["custom_details"] == {"runbook": "alerting", "team": "sre"}
    assert steps[1]["with"] == {"channel": "monitoring", "dedup_key": "{{steps.alert.dedup_key}}"}
    assert "connection" not in steps[0] and "connection" not in steps[1]
