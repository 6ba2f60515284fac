#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # Log records on stderr: stdout is the command's own output (a --json report).
    os.environ.setdefault("LOG_STREAM", "stderr")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A missing or wrong setting: its message says what to set, and a
        # traceback through Django's start-up would only bury it.
        if "--traceback" in sys.argv:
            raise
        sys.stderr.write(f"Configuration error: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
