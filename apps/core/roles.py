"""Roles are Django groups; a person may do what their groups' permissions allow, nothing more.

The five groups and what each may do are created by data migrations (`apps/core/migrations/`), so
a deployment gets them on `migrate` and an administrator may still adjust them afterwards. An app
that adds a door adds its permission to the groups in its own migration:

    from apps.core.roles import grant_permissions

    operations = [grant_permissions({"PagerDuty admins": ["pagerduty.test_channel"]})]

See docs/permissions.md.
"""

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db import migrations

VIEWERS = "Viewers"
RESPONDERS = "Responders"
RUNBOOK_AUTHORS = "Runbook authors"
ONCALL_MANAGERS = "On-call managers"
PAGERDUTY_ADMINS = "PagerDuty admins"
ROLE_NAMES = (VIEWERS, RESPONDERS, RUNBOOK_AUTHORS, ONCALL_MANAGERS, PAGERDUTY_ADMINS)


def user_has_role(user) -> bool:
    """May this person use the service at all (admin or API)? Any permission from a group will do."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or bool(user.get_all_permissions())


class GroupPermissionsBackend(ModelBackend):
    """Permissions come from groups only (and superusers have all): a permission given to a single
    user directly would be a role nobody can see in the matrix, so it is ignored."""

    def _get_user_permissions(self, user_obj):
        return Permission.objects.none()


# --- migrations --------------------------------------------------------------------------------


def _permission(apps, name: str):
    """The Permission row for "app_label.codename", created if `migrate` has not made it yet (it does
    so only after the last migration, and a data migration runs before that)."""
    app_label, _, codename = name.partition(".")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in apps.get_app_config(app_label).get_models():
        opts = model._meta
        declared = {
            f"{action}_{opts.model_name}": f"Can {action} {opts.verbose_name_raw}"
            for action in opts.default_permissions
        }
        declared.update(dict(opts.permissions))
        if codename in declared:
            content_type = ContentType.objects.get_for_model(model, for_concrete_model=False)
            permission, _ = Permission.objects.get_or_create(
                content_type=content_type, codename=codename, defaults={"name": declared[codename][:255]}
            )
            return permission
    raise LookupError(f"No model of app {app_label!r} declares the permission {codename!r}")


def _grant(grants: dict[str, list[str]]):
    def forwards(apps, schema_editor):
        Group = apps.get_model("auth", "Group")
        for group_name, names in grants.items():
            group, _ = Group.objects.get_or_create(name=group_name)
            group.permissions.add(*[_permission(apps, name) for name in names])

    return forwards


def _revoke(grants: dict[str, list[str]]):
    def backwards(apps, schema_editor):
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
        for group_name, names in grants.items():
            group = Group.objects.filter(name=group_name).first()
            if group is None:
                continue
            for name in names:
                app_label, _, codename = name.partition(".")
                group.permissions.remove(
                    *Permission.objects.filter(content_type__app_label=app_label, codename=codename)
                )

    return backwards


def grant_permissions(grants: dict[str, list[str]]) -> migrations.RunPython:
    """A migration operation: give each group (created if missing) these "app_label.codename"
    permissions. Idempotent, so it is safe on a database that already has some of them; reversing
    it takes the same permissions away again. The migration must depend on the migrations that
    declare the models and permissions it names."""
    return migrations.RunPython(_grant(grants), _revoke(grants), elidable=False)
