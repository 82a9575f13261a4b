from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.runbooks.loader import YamlError, read_documents, spec_problems, spec_warnings
from apps.runbooks.models import Runbook
from apps.runbooks.services import runbook_upsert_from_spec
from apps.runbooks.versions import LOADED_FROM_YAML, runbook_edit_since_load


class Command(BaseCommand):
    help = "Load runbooks from YAML files (upsert by slug). With --check, validate only."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="YAML files or directories (searched recursively)")
        parser.add_argument("--check", action="store_true", help="Validate every file and write nothing")
        parser.add_argument(
            "--keep-edited",
            action="store_true",
            help="Leave alone a runbook changed since it was last loaded from YAML (an admin edit) and say so; "
            "without it the files win",
        )

    def handle(self, *args, paths, check, keep_edited, **options):
        documents = []
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                raise CommandError(f"{raw}: no such file or directory")
            documents += read_documents(path)
        if not documents:
            raise CommandError(f"No runbook YAML files found in {', '.join(paths)}")
        problems, slugs = [], {}
        for source, doc in documents:
            if isinstance(doc, YamlError):
                problems.append(f"{source}: {doc}")
                continue
            for problem in spec_problems(doc, source=source):
                problems.append(f"{source}: {problem}")
            slug = doc.get("slug") if isinstance(doc, dict) and isinstance(doc.get("slug"), str) else None
            if slug is not None and slug in slugs:
                problems.append(f"{source}: slug {slug!r} is also defined in {slugs[slug]}")
            slugs.setdefault(slug, source)
        if problems:
            for line in problems:
                self.stderr.write(line)
            raise CommandError(f"{len(problems)} problem(s) in {len(documents)} runbook(s); nothing was written")
        for source, doc in documents:
            for warning in spec_warnings(doc):
                self.stderr.write(self.style.WARNING(f"{source}: warning: {warning}"))
        if check:
            self.stdout.write(self.style.SUCCESS(f"{len(documents)} runbook(s) valid"))
            return
        kept = 0
        for source, doc in documents:
            existing = Runbook.objects.filter(slug=doc["slug"]).first() if keep_edited else None
            edit = runbook_edit_since_load(runbook=existing) if existing else None
            if edit is not None:
                kept += 1
                if edit.comment == LOADED_FROM_YAML and edit.created_by is None:
                    what = f"changed after version {edit.number} without a version being written"
                else:
                    who = edit.created_by.get_username() if edit.created_by else "the system"
                    what = f"version {edit.number} by {who}, {edit.created_at:%Y-%m-%d %H:%M} UTC"
                self.stdout.write(
                    self.style.WARNING(
                        f"kept {existing.slug}: changed since it was loaded ({what}); {source} not loaded over it. "
                        f"To replace it with the file: python manage.py load_runbooks {source}"
                    )
                )
                continue
            runbook, created = runbook_upsert_from_spec(spec=doc)
            self.stdout.write(f"{'created' if created else 'updated'} {runbook.slug} ({source})")
        loaded = f"{len(documents) - kept} runbook(s) loaded"
        self.stdout.write(self.style.SUCCESS(loaded + (f", {kept} kept as edited" if kept else "")))
