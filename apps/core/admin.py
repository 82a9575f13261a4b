from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class RoleUserAdmin(UserAdmin):
    """A person's roles are their groups. Permissions given to a single user are ignored
    (apps.core.roles.GroupPermissionsBackend), so the form does not offer them."""

    fieldsets = [
        (name, {**options, "fields": tuple(f for f in options["fields"] if f != "user_permissions")})
        for name, options in UserAdmin.fieldsets
    ]
    filter_horizontal = ("groups",)
    list_display = ["username", "email", "roles", "is_active", "is_superuser", "last_login"]
    list_filter = ["groups", "is_active", "is_superuser"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="roles")
    def roles(self, obj):
        return ", ".join(g.name for g in obj.groups.all()) or "—"
