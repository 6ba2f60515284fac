#!/usr/bin/env bash
# Build a local stand-in for python:3.12-slim-bookworm, for the image tests.
#
# No container registry is reachable from this machine, so no base image can
# be pulled. This makes an equivalent one from Debian's own packages:
# debootstrap's minbase of bookworm, the shared libraries CPython's modules
# use, this machine's CPython 3.12 under /usr/local (as the official image
# has it), and this machine's CA certificates. Then `docker import`s it.
#
# Usage: tests/docker/build-base-image.sh [TAG]
set -o errexit -o pipefail -o nounset

tag=${1:-local/python:3.12-slim-bookworm}
python_prefix=${PYTHON_PREFIX:-$(dirname "$(dirname "$(readlink -f /root/.pyenv/versions/3.12.1/bin/python3.12)")")}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# One build at a time on this machine: two test runs (two clones) asking at once would both debootstrap, and
# both import under the same tag. The second waits, then finds the image.
exec 9>"${TMPDIR:-/tmp}/build-base-image.lock"
flock 9
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag already exists"
    exit 0
fi

rootfs=$(mktemp -d /var/tmp/python-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

packages=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libexpat1,libgdbm6,libdb5.3
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >/dev/null

# CPython under /usr/local, without its tests, caches and static library, as the slim image ships it (its
# Dockerfile removes test, tests and idle_test folders, *.pyc and libpython*.a: 60 MB that only linking uses).
cp -a "$python_prefix"/. "$rootfs/usr/local/"
rm -rf "$rootfs"/usr/local/lib/python3.12/test "$rootfs"/usr/local/lib/python3.12/idlelib \
       "$rootfs"/usr/local/lib/python3.12/tkinter "$rootfs"/usr/local/lib/python3.12/turtledemo
find "$rootfs/usr/local" -depth \( -type d \( -name test -o -name tests -o -name idle_test \) \
     -o -type f -name 'libpython*.a' \) -exec rm -rf {} +
find "$rootfs/usr/local/lib/python3.12/site-packages" -mindepth 1 -maxdepth 1 \
     ! -name 'pip' ! -name 'pip-*' -exec rm -rf {} +
find "$rootfs/usr/local" -name '__pycache__' -type d -prune -exec rm -rf {} +
# Scripts (pip) name the interpreter by its old path in their first line.
grep -l -s -I '^#!.*python' "$rootfs"/usr/local/bin/* | xargs -r sed -i '1s|^#!.*python.*$|#!/usr/local/bin/python3.12|'
ln -sf python3.12 "$rootfs/usr/local/bin/python3"
ln -sf python3.12 "$rootfs/usr/local/bin/python"
ln -sf pip3.12 "$rootfs/usr/local/bin/pip" 2>/dev/null || true
chroot "$rootfs" ldconfig

# The machine's CA certificates (a TLS-intercepting proxy's among them).
cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || true

# What apt left behind.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
docker run --rm --network host "$tag" python3 -c "import ssl, sqlite3, ctypes, lzma, bz2, uuid; print('base image ok')"
