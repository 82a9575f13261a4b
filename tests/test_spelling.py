""" "PagerDuty" is one word with two capitals wherever a person reads it: model and field names as the
admin and the API schema show them, permission names, app names."""

import re

from django.apps import apps

WRONG = re.compile(r"pager[ _-]?duty", re.IGNORECASE)


def _misspelt(text: str) -> bool:
    return any(match.group(0) != "PagerDuty" for match in WRONG.finditer(text))


def test_pagerduty_is_one_word_in_every_label():
    wrong = []
    for config in apps.get_app_configs():
        if _misspelt(str(config.verbose_name)):
            wrong.append(f"app {config.label}: {config.verbose_name}")
    for model in apps.get_models():
        for name in (model._meta.verbose_name, model._meta.verbose_name_plural):
            if _misspelt(str(name)):
                wrong.append(f"{model.__name__}: {name}")
        for field in model._meta.get_fields():
            label = str(getattr(field, "verbose_name", ""))
            if _misspelt(label):
                wrong.append(f"{model.__name__}.{field.name}: {label}")
    assert not wrong, "\n".join(wrong)
