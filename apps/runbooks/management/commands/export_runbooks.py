from pathlib import Path

from django.core.management.base import BaseCommand

from apps.runbooks.loader import dump_yaml, runbook_to_spec
from apps.runbooks.models import Runbook


class Command(BaseCommand):
    help = "Write every runbook (or the given slugs) as <slug>.yaml into DIR."

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--slug", action="append", dest="slugs", help="Only this runbook (repeatable)")

    def handle(self, *args, directory, slugs, **options):
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        runbooks = Runbook.objects.prefetch_related("steps")
        if slugs:
            runbooks = runbooks.filter(slug__in=slugs)
        count = 0
        for runbook in runbooks:
            path = target / f"{runbook.slug}.yaml"
            path.write_text(dump_yaml(runbook_to_spec(runbook)))
            self.stdout.write(f"wrote {path}")
            count += 1
        self.stdout.write(self.style.SUCCESS(f"{count} runbook(s) exported to {target}"))
