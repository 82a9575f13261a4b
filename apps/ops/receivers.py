from apps.ops import metrics


def observe_step(sender, instance, **kwargs):
    """A step that just finished: its duration goes into the step latency histogram."""
    if instance.finished_at is None or instance.started_at is None:
        return
    if instance.status not in ("succeeded", "failed", "skipped"):
        return
    seconds = max(0.0, (instance.finished_at - instance.started_at).total_seconds())
    metrics.STEP_DURATION.labels(action=instance.action or "", status=instance.status).observe(seconds)
