from django import template

from apps.core.links import external_link as render_external_link

register = template.Library()


@register.filter
def external_link(url, text=None):
    """{{ schedule.html_url|external_link }}: a link only for http(s) URLs (apps.core.links)."""
    return render_external_link(url, text)
