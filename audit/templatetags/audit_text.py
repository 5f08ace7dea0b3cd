"""``{% load audit_text %}`` then ``{{ event.target_label|safe_text }}``."""

from django import template

from audit.text import safe_text as _safe_text

register = template.Library()


@register.filter(name="safe_text", is_safe=False)
def safe_text(value: object) -> str:
    # Not marked safe on purpose: autoescaping still turns <script> into text.
    return _safe_text(value)
