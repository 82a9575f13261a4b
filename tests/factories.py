import factory

from apps.incidents.models import Incident
from apps.incidents.services import incident_create
from apps.runbooks.models import Runbook, Step


class IncidentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Incident

    title = factory.Sequence(lambda n: f"Checkout errors #{n}")
    summary = "Error rate above 5% on checkout"
    severity = 1
    status = "Detected"
    service = "checkout"
    environment = "production"
    owner = "sre@example.com"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # Through the service, as production code does: number, timeline event, on_commit hooks.
        return incident_create(**kwargs)


class RunbookFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Runbook
        django_get_or_create = ["slug"]

    slug = factory.Sequence(lambda n: f"runbook-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())
    trigger_on = "status_changed"
    trigger_to = factory.LazyFunction(lambda: ["Investigating"])


class StepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Step

    runbook = factory.SubFactory(RunbookFactory)
    position = factory.Sequence(lambda n: n)
    key = factory.Sequence(lambda n: f"step_{n}")
    action = "pagerduty.create_incident"
    connection = "default"
    inputs = factory.LazyFunction(dict)
