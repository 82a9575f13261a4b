from django.db import models


class Heartbeat(models.Model):
    """The last sign of life of a part of the service, written by the part itself (one row per name).

    `worker`: a task that beat sends every HEARTBEAT_INTERVAL seconds and a worker executes, so a
    fresh row means the scheduler, the broker and a worker all work."""

    name = models.CharField(max_length=50, unique=True)
    at = models.DateTimeField()
    hostname = models.CharField(max_length=255, blank=True)

    class Meta:
        permissions = [("view_metrics", "Can read the service's Prometheus metrics at /metrics")]

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"
