from django.core.management.base import BaseCommand, CommandError

from apps.core.encryption import UNREADABLE_REASON, secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (every EncryptedTextField of every model) with the newest key of "
        "FIELD_ENCRYPTION_KEY. Rotate keys in three moves: set FIELD_ENCRYPTION_KEY=NEW,OLD everywhere, run "
        "this command, then drop OLD. Safe to run again and while the service runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be re-encrypted; change nothing")

    def handle(self, *args, dry_run, **options):
        report = secrets_rotate(dry_run=dry_run)
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        unreadable = []
        for row in report:
            self.stdout.write(
                f"{row['field']}: {verb} {row['rotated']}, already under the newest key {row['current']}"
                + (f", changed meanwhile (left as written) {row['changed']}" if row["changed"] else "")
                + (f", unreadable {len(row['unreadable'])}" if row["unreadable"] else "")
            )
            unreadable += [f"{row['field']} of pk={pk}" for pk in row["unreadable"]]
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} stored secret(s) {UNREADABLE_REASON}: "
                + ", ".join(unreadable[:50])
                + (" …" if len(unreadable) > 50 else "")
            )
