import os

from celery import Celery

from apps.runbooks.bootsteps import RecoverAfterReconnect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("runbook_automation")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["consumer"].add(RecoverAfterReconnect)
