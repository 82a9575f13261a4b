"""Permission checks at the doors: DRF classes for the API, a decorator for custom admin views.

Every viewset declares, per action, the permissions that action needs:

    class RunViewSet(viewsets.ReadOnlyModelViewSet):
        action_permissions = {
            "list": ["runbooks.view_runbookrun"],
            "retrieve": ["runbooks.view_runbookrun"],
            "rerun": ["runbooks.rerun_runbookrun"],
        }

`ActionPermissions` is the default permission class of the whole API, so a view or action that
declares nothing is refused to everyone: a door added without a declaration stays shut (and the
permission matrix test names it).
"""

from functools import wraps

from django.core.exceptions import PermissionDenied
from rest_framework import permissions

from apps.core.roles import user_has_role

# OPTIONS describes an endpoint: whoever may read it may ask.
_READ_ACTIONS = ("list", "retrieve")


class ActionPermissions(permissions.BasePermission):
    message = "You do not have permission to perform this action."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        method = request.method.lower()
        no_such_action = getattr(view, "action_map", None) is not None and getattr(view, "action", None) is None
        if no_such_action or method not in getattr(view, "http_method_names", (method,)):
            # The viewset has no action for this method: DRF answers 405 (true, and documented) to
            # anyone with a role; someone with no role still meets 403 everywhere.
            return user_has_role(user)
        declared = getattr(view, "action_permissions", None) or {}
        action = getattr(view, "action", None) or request.method.lower()
        required = declared.get(action)
        if required is None and action == "metadata":
            required = next((declared[a] for a in _READ_ACTIONS if a in declared), None)
        if required is None:
            self.message = f"No permission is declared for {action!r} on this endpoint."
            return False
        return user.has_perms(required)


class HasAnyRole(permissions.BasePermission):
    """For doors that show no data (API root, schema, docs): any role will do, but a role is needed."""

    message = "Your account has no role: ask an administrator to add it to a group."

    def has_permission(self, request, view) -> bool:
        return user_has_role(request.user)


def admin_permission_required(*perms: str):
    """For custom admin views (methods of a ModelAdmin): refuse with 403 before anything else runs."""

    def decorator(view):
        @wraps(view)
        def guarded(model_admin, request, *args, **kwargs):
            if not request.user.has_perms(perms):
                raise PermissionDenied
            return view(model_admin, request, *args, **kwargs)

        guarded.required_permissions = perms
        return guarded

    return decorator
