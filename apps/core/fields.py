"""Model fields shared by several apps."""

from django.db import models

from apps.core.limits import STORED_BODY_MAX_CHARS
from apps.core.validators import storable_json


class StoredBodyField(models.JSONField):
    """JSON we record but did not write (a PagerDuty answer, a request body): kept at most
    `max_chars` of JSON text, cut with a visible marker beyond that, NUL characters replaced.

    Applied on every write path (save, update(), bulk_create), since all go through get_prep_value.
    """

    def __init__(self, *args, max_chars: int = STORED_BODY_MAX_CHARS, **kwargs):
        self.max_chars = max_chars
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.max_chars != STORED_BODY_MAX_CHARS:
            kwargs["max_chars"] = self.max_chars
        return name, path, args, kwargs

    def get_prep_value(self, value):
        return super().get_prep_value(storable_json(value, max_chars=self.max_chars))
