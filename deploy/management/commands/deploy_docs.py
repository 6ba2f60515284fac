"""Write the reference pages of docs/ from the code (configuration, commands, manifests)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deploy import docs


class Command(BaseCommand):
    help = "Generate docs/reference/ from the code; with --check, fail if a page is out of date."

    def add_arguments(self, parser):
        parser.add_argument("--docs-dir", default="docs", help="The documentation folder (default docs).")
        parser.add_argument(
            "--check", action="store_true", help="Write nothing; exit 1 naming the pages that are out of date."
        )

    def handle(self, *args, docs_dir, check, **options):
        if not Path(docs_dir).is_dir():
            raise CommandError(f"{docs_dir} is not a folder: run from the project root or pass --docs-dir.")
        if check:
            stale = docs.stale(docs_dir)
            if stale:
                raise CommandError(
                    f"Out of date: {', '.join(stale)}. Run 'python manage.py deploy_docs' and commit the result."
                )
            self.stdout.write("The reference pages match the code.")
            return
        written = docs.write(docs_dir)
        self.stdout.write(f"Wrote {len(written)} page(s): {', '.join(written) or 'all were up to date'}.")
