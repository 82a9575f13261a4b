from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.runbooks.loader import dump_yaml, runbook_to_spec
from apps.runbooks.models import Runbook, slug_problem


class Command(BaseCommand):
    help = "Write every runbook (or the given slugs) as <slug>.yaml into DIR."

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--slug", action="append", dest="slugs", help="Only this runbook (repeatable)")

    def handle(self, *args, directory, slugs, **options):
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        root = target.resolve()
        runbooks = Runbook.objects.prefetch_related("steps")
        if slugs:
            runbooks = runbooks.filter(slug__in=slugs)
        count, refused = 0, []
        for runbook in runbooks:
            # The slug names the file: one that is not a plain slug (`../../x`, `/etc/x`, saved
            # before slugs were checked) could write anywhere, so it is refused, not sanitised.
            problem = slug_problem(runbook.slug)
            path = (root / f"{runbook.slug}.yaml").resolve()
            if problem is None and path.parent != root:
                problem = f"{runbook.slug!r} would be written outside {root}"
            if problem is not None:
                refused.append(f"runbook id {runbook.pk}: not exported: {problem}")
                continue
            path.write_text(dump_yaml(runbook_to_spec(runbook)), encoding="utf-8")
            self.stdout.write(f"wrote {path}")
            count += 1
        self.stdout.write(self.style.SUCCESS(f"{count} runbook(s) exported to {target}"))
        if refused:
            for line in refused:
                self.stderr.write(line)
            raise CommandError(
                f"{len(refused)} runbook(s) not exported; rename them (a slug is letters, digits, - and _)"
            )
