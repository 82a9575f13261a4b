import json

from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    """Templates cannot index a dict by a variable."""
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def compact(value):
    """A changed value as one short line of JSON; long lists are cut so a plan page stays readable."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 300 else text[:297] + "…"
