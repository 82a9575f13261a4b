"""The webhook receiver: a door without login, authenticated by PagerDuty's signature."""

from django.http import HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from apps.core.api import json_error
from apps.pagerduty import webhooks


@csrf_exempt
def pagerduty_webhook(request, connection_name: str):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"], "PagerDuty webhooks are POSTed here.")
    # Read at most one byte past the limit: a larger body is refused without being held whole.
    body = request.read(webhooks.WEBHOOK_BODY_MAX + 1)
    answer = webhooks.webhook_receive(
        connection_name=connection_name,
        body=body,
        signature_header=request.headers.get("X-PagerDuty-Signature"),
        webhook_id=request.headers.get("X-Webhook-Id", ""),
    )
    if answer.created:
        webhooks.webhook_enqueue(answer.delivery.pk)
    # The same {"message"} shape whether accepted or refused: PagerDuty only reads the status.
    return json_error(answer.status, answer.message)
