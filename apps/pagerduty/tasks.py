"""Thin Celery tasks for webhooks in: ids in, a locked row, a redelivered message is a no-op."""

from celery import shared_task

from apps.pagerduty import webhooks


@shared_task(acks_late=True)
def process_webhook_delivery(delivery_id: int) -> str | None:
    return webhooks.webhook_process(delivery_id=delivery_id)


@shared_task
def recover_webhook_deliveries(pending_after_seconds: int | None = None) -> int:
    return webhooks.webhooks_recover(pending_after_seconds=pending_after_seconds)
