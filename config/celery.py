import os

from celery import Celery, signals

from apps.runbooks.bootsteps import RecoverAfterReconnect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("runbook_automation")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(RecoverAfterReconnect)


@signals.task_prerun.connect
@signals.task_postrun.connect
def close_old_database_connections(**kwargs):
    """Around each task, what Django does around each request: close a connection that broke or
    outlived CONN_MAX_AGE; keep the others (CELERY_DB_REUSE_MAX stops Celery closing them all)."""
    if getattr(kwargs.get("task") and kwargs["task"].request, "is_eager", False):
        return  # an eager task runs inside its caller's request or test: its connection is the caller's
    from django.db import close_old_connections

    close_old_connections()
