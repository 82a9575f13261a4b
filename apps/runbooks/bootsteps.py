"""A worker step: when the connection to the broker comes back, sweep for lost work at once.

While the broker was away, every message published meanwhile failed (the change behind it is
committed and logged, see apps.core.queueing), and a Redis restarted without persistence lost
its queues. The periodic sweep would find that work after RUN_RECOVERY_PENDING_AFTER_SECONDS;
this asks for a sweep of everything not done right after the reconnect. Re-queuing work whose
message did survive only costs a message: runs are unique per event and leased.

No Django import here: config/celery.py adds the step before Django is set up, and the task is
named, not imported.
"""

import logging

from celery import bootsteps
from celery.worker.consumer import Tasks

logger = logging.getLogger(__name__)
SWEEP_TASK = "apps.runbooks.tasks.recover_stalled_runs"


class RecoverAfterReconnect(bootsteps.StartStopStep):
    requires = (Tasks,)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.connections = 0

    def start(self, c):
        # start() runs each time the consumer (re)connects; the first time is the worker starting.
        self.connections += 1
        if self.connections == 1:
            return
        try:
            c.app.send_task(SWEEP_TASK, kwargs={"pending_after_seconds": 0})
        except Exception as exc:  # never let the safety net take the worker down
            logger.warning("could not queue the recovery sweep after reconnecting: %s", exc)
        else:
            logger.info("reconnected to the broker: recovery sweep queued for work lost meanwhile")
