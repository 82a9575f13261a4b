from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    default = True  # this module also holds RolesAdminConfig


class RolesAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with our site (admission by role, see apps.core.admin_site)."""

    default = False
    default_site = "apps.core.admin_site.RoleAdminSite"
