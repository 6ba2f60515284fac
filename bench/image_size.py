"""Image size: the app image next to its base, built in the same run.

Usage: python bench/image_size.py   (needs a Docker engine; DOCKER_HOST is honoured)
Target: the app image adds no more than 150 MB to its base.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "local/python:3.12-slim-bookworm"
IMAGE = "django-app:bench"


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def main():
    try:
        docker("info")
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("no Docker engine answers: start dockerd (see .ci/run) to measure the image") from None
    subprocess.run(["bash", str(ROOT / "tests/docker/build-base-image.sh"), BASE], check=True)
    subprocess.run(
        ["docker", "build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}", "-t", IMAGE, str(ROOT)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    sizes = {tag: int(docker("image", "inspect", "-f", "{{.Size}}", tag)) / 1e6 for tag in (BASE, IMAGE)}
    added = sizes[IMAGE] - sizes[BASE]
    print(f"{'image':<40}{'MB':>8}")
    for tag, size in sizes.items():
        print(f"{tag:<40}{size:>8.0f}")
    print(f"added to the base: {added:.0f} MB (target <= 150) {'OK' if added <= 150 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
