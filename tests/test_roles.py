"""How people reach the service: by role, never by is_staff or a permission of their own."""

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from apps.core.roles import ROLE_NAMES, grant_permissions

pytestmark = pytest.mark.django_db


def test_the_roles_migration_made_the_five_groups():
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLE_NAMES)
    viewers = Group.objects.get(name="Viewers")
    assert not viewers.permissions.exclude(codename__startswith="view_").exists()
    assert not viewers.permissions.filter(content_type__app_label__in=["auth", "auditlog", "authtoken"]).exists()


def test_a_member_of_a_group_logs_in_without_being_staff(client, role_user):
    role_user("Viewers", username="vera")
    response = client.post("/admin/login/?next=/admin/", {"username": "vera", "password": "pw-0123456789"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_staff_user_without_a_role_is_told_why_and_refused(client, django_user_model):
    django_user_model.objects.create_user("sam", password="pw-0123456789", is_staff=True)
    response = client.post("/admin/login/", {"username": "sam", "password": "pw-0123456789"})
    assert response.status_code == 200
    assert "This account has no role: ask an administrator to add it to a group." in response.content.decode()
    client.login(username="sam", password="pw-0123456789")  # signed in another way (e.g. an API session)
    assert client.get("/admin/").status_code == 403
    assert client.post("/admin/logout/").status_code == 200  # but may still log out


def test_a_permission_given_to_a_single_user_is_ignored(client, django_user_model):
    user = django_user_model.objects.create_user("direct", password="pw-0123456789")
    user.user_permissions.add(Permission.objects.get(codename="view_incident"))
    assert not user.has_perm("incidents.view_incident")
    client.force_login(user)
    assert client.get("/admin/incidents/incident/").status_code == 403


def test_options_is_checked_like_a_read(role_user, django_user_model):
    api = APIClient()
    api.force_authenticate(django_user_model.objects.create_user("nobody"))
    assert api.options("/api/v1/incidents/").status_code == 403
    api.force_authenticate(role_user("Viewers"))
    assert api.options("/api/v1/incidents/").status_code == 200
    assert api.options("/api/v1/audit/").status_code == 403


def test_grant_permissions_is_idempotent_reversible_and_refuses_typos():
    operation = grant_permissions({"Viewers": ["auditlog.view_logentry"], "Auditors": ["auditlog.view_logentry"]})
    operation.code(django_apps, None)
    operation.code(django_apps, None)
    assert Group.objects.get(name="Auditors").permissions.get().codename == "view_logentry"
    assert Group.objects.get(name="Viewers").permissions.filter(codename="view_logentry").count() == 1
    operation.reverse_code(django_apps, None)
    assert not Group.objects.get(name="Viewers").permissions.filter(codename="view_logentry").exists()
    with pytest.raises(LookupError, match="declares the permission 'veiw_incident'"):
        grant_permissions({"Viewers": ["incidents.veiw_incident"]}).code(django_apps, None)
