from django.dispatch import Signal

# A step reached succeeded, failed or skipped: kwargs `step_run` (its status, started_at and
# finished_at as written). The engine writes steps with UPDATE statements, so post_save never fires.
step_ended = Signal()
