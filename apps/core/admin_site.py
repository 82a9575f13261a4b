"""The admin site: open to anyone with a role, 403 (never a redirect loop) to a signed-in person without one.

Django's own site admits `is_staff` users and sends everyone else back to the login page. Here a
role (a permission from a group, or superuser) is what admits a person, so membership of a group
is all an administrator has to give; `is_staff` plays no part. An admin action the person may not
use answers 403 too, instead of Django's silent "No action selected".
"""

from functools import update_wrapper

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.generic import RedirectView

from apps.core.roles import user_has_role


class RoleAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "Please enter a correct %(username)s and password. Both fields may be case-sensitive.",
        "no_role": "This account has no role: ask an administrator to add it to a group.",
    }

    def confirm_login_allowed(self, user):
        # Not super(): that insists on is_staff.
        if not user.is_active:
            raise ValidationError(self.error_messages["inactive"], code="inactive")
        if not user_has_role(user):
            raise ValidationError(self.error_messages["no_role"], code="no_role")


def _refuse_unpermitted_actions(model_admin, changelist_view):
    def guarded(request, *args, **kwargs):
        action = request.POST.get("action") if request.method == "POST" else None
        if action and action not in model_admin.get_actions(request):
            raise PermissionDenied
        return changelist_view(request, *args, **kwargs)

    return update_wrapper(guarded, changelist_view)


def _refuse_redirect_without_view_permission(redirect_view):
    """`<model>/<id>/` only redirects to `<model>/<id>/change/`; it refuses as that page would."""

    def guarded(request, *args, **kwargs):
        model_admin = getattr(request.resolver_match.func, "model_admin", None)
        if model_admin is not None and not model_admin.has_view_or_change_permission(request):
            raise PermissionDenied
        return redirect_view(request, *args, **kwargs)

    return update_wrapper(guarded, redirect_view)


class RoleAdminSite(admin.AdminSite):
    site_header = "Runbook automation"
    site_title = "Runbook automation"
    login_form = RoleAuthenticationForm

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._links: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}

    def register_link(self, app_label: str, name: str, url_name: str, permissions: tuple[str, ...]) -> None:
        """A page that is not a model's list, shown first in its app on the index and app pages to
        whoever has `permissions` (the page checks them itself too)."""
        self._links.setdefault(app_label, []).append((name, url_name, tuple(permissions)))

    def get_app_list(self, request, app_label=None):
        app_list = super().get_app_list(request, app_label)
        for app in app_list:
            for name, url_name, permissions in reversed(self._links.get(app["app_label"], [])):
                if request.user.has_perms(permissions):
                    url = reverse(url_name, current_app=self.name)
                    app["models"].insert(
                        0,
                        {
                            "name": name,
                            "object_name": url_name.split(":")[-1],
                            "admin_url": url,
                            "add_url": None,
                            "view_only": True,
                        },
                    )
        return app_list

    def has_permission(self, request):
        return user_has_role(request.user)

    def admin_view(self, view, cacheable=False):
        model_admin = getattr(view, "__self__", None)
        if isinstance(model_admin, admin.ModelAdmin) and view.__name__ == "changelist_view":
            view = _refuse_unpermitted_actions(model_admin, view)
        elif getattr(view, "view_class", None) is RedirectView:
            view = _refuse_redirect_without_view_permission(view)
        checked = super().admin_view(view, cacheable)
        # Django's check would send a signed-in person without a role to the login page, which
        # offers them nothing (they are signed in): refuse instead, but let them log out.
        unchecked = csrf_protect(never_cache(view))

        def inner(request, *args, **kwargs):
            if request.user.is_authenticated and not self.has_permission(request):
                if request.path == reverse("admin:logout", current_app=self.name):
                    return unchecked(request, *args, **kwargs)
                raise PermissionDenied
            return checked(request, *args, **kwargs)

        return update_wrapper(inner, checked)

    def app_index(self, request, app_label, extra_context=None):
        # Django answers 404 for an app none of whose models the person may see; it is a refusal.
        if not self.get_app_list(request, app_label):
            raise PermissionDenied
        return super().app_index(request, app_label, extra_context)
