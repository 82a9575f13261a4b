from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    verbose_name = "Audit"

    def ready(self):
        from auditlog.models import LogEntry
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db.models.signals import pre_save

        from apps.audit import middleware
        from apps.audit.services import audit_register

        pre_save.connect(middleware.fill_actor, sender=LogEntry, dispatch_uid="audit.fill_actor")
        # Who holds which role, and what each role may do. Never the password hash or login times.
        audit_register(
            get_user_model(),
            include_fields=["username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser"],
            m2m_fields={"groups"},
        )
        audit_register(Group, include_fields=["name"], m2m_fields={"permissions"})
