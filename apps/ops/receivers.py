from apps.ops import metrics


def observe_step(sender, step_run, **kwargs):
    """A step that just finished: its duration goes into the step latency histogram."""
    if step_run.finished_at is None or step_run.started_at is None:
        return
    if step_run.status not in ("succeeded", "failed", "skipped"):
        return
    seconds = max(0.0, (step_run.finished_at - step_run.started_at).total_seconds())
    metrics.STEP_DURATION.labels(action=step_run.action or "", status=step_run.status).observe(seconds)
