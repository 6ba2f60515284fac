"""Settings of the copy benchmark: the project's own, plus the shapes of data it measures (bench.shapes).

The product never installs bench.shapes: only bench/migration.py runs with these settings.
"""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.shapes"]
