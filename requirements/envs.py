"""Lock the requirements with hashes, and fill the virtual environments from the locks.

    python3.12 requirements/envs.py sync .venv=requirements/dev.lock .venv-tools=requirements/tools.lock
    python3.12 requirements/envs.py lock [--upgrade]
    python3.12 requirements/envs.py check

The human-edited inputs are requirements/*.txt; `lock` compiles each into a
requirements/*.lock with every package pinned and hashed (`uv pip compile
--generate-hashes`, Python 3.12 on Linux). base.lock is compiled under the
constraint of dev.lock, so the image (base.lock) and the development
environment (dev.lock) hold the same versions of the same files.

`sync` makes each environment hold exactly its lock (`uv pip sync
--require-hashes`). uv comes from PyPI, pinned and hashed in bootstrap.lock, and
is installed by pip into .venv-bootstrap; where it cannot be had, pip installs
the lock instead (into a new environment, with --require-hashes).

uv reads none of pip's configuration, so its index settings are taken from
pip's (`pip config list` and PIP_* variables): installs use all of them, as pip
would; locking uses the primary index only, so that the hashes in the lock are
those of that index's files whatever mirror or wheel directory a machine adds.

Runs with the standard library and pip's own copy of `packaging`: nothing
needs to be installed first. Failures end with a message saying what to do, not a traceback.
"""

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # the bare interpreter that creates the environments: pip ships its own copy
    try:
        from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    except ImportError:
        sys.exit(f"error: {sys.executable} has no pip: install pip for it (python3-pip on Debian) and run make again")

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
BOOTSTRAP_DIR = ROOT / ".venv-bootstrap"
PYTHON_VERSION = "3.12"
PLATFORM = "linux"
# (input, lock, the lock it is constrained by): dev before base and deploy, so that they take dev's versions.
LOCKS = (
    ("bootstrap.txt", "bootstrap.lock", None),
    ("dev.txt", "dev.lock", None),
    ("base.txt", "base.lock", "dev.lock"),
    ("deploy.txt", "deploy.lock", "dev.lock"),
    ("tools.txt", "tools.lock", None),
)


class EnvError(Exception):
    """An expected failure: its message says what went wrong and what to do."""


# --- reading the inputs and the locks -------------------------------------------------------------


@dataclass(frozen=True)
class Pinned:
    name: str  # canonical
    version: str
    hashes: tuple[str, ...]
    via: tuple[str, ...]  # the requirement files (`-r FILE`) that ask for it by name


@dataclass
class Requested:
    requirement: Requirement
    source: str  # the file that names it, relative to the repository


def _logical_lines(path):
    """Lines of a requirements file with comments dropped and continuations joined."""
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            yield line


def read_requirements(path, root=ROOT):
    """The requirements a file names, following `-r` includes; each with the file that names it."""
    found = []
    for line in _logical_lines(path):
        if line.startswith(("-r ", "--requirement ")):
            found += read_requirements(path.parent / line.split(None, 1)[1], root)
        elif line.startswith("-"):
            continue  # options (-c, --index-url...) are not packages
        else:
            try:
                requirement = Requirement(line)
            except InvalidRequirement as exc:
                raise EnvError(f"{_rel(path, root)}: cannot read {line!r} ({exc}); fix that line") from None
            found.append(Requested(requirement, _rel(path, root)))
    return found


def read_lock(path, root=ROOT):
    """The pins of a lock written by `uv pip compile --generate-hashes`, by canonical name."""
    pins = {}
    text = path.read_text()
    # One block per package: "name==version \" then hash lines, then the "# via" annotation.
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = block.split("\n", 1)[0]
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", head)
        if not match:
            continue
        via = re.findall(r"#\s+(?:via\s+)?-r\s+(\S+)", block)
        name = canonicalize_name(match.group(1))
        pins[name] = Pinned(
            name=name,
            version=match.group(3),
            hashes=tuple(re.findall(r"--hash=(\S+?)\s*\\?$", block, flags=re.MULTILINE)),
            via=tuple(_rel((root / v).resolve(), root) for v in via),
        )
    return pins


def _rel(path, root):
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def check(root=ROOT, locks=LOCKS):
    """Where the locks disagree with the requirements: one line per package, naming it."""
    directory = root / "requirements"
    problems = []
    for source_name, lock_name, constrained_by in locks:
        source, lock = directory / source_name, directory / lock_name
        if not source.exists():
            continue
        if not lock.exists():
            problems.append(f"{_rel(lock, root)} is missing: run `make lock`")
            continue
        pins = read_lock(lock, root)
        requested = read_requirements(source, root)
        named = set()
        for item in requested:
            req, name = item.requirement, canonicalize_name(item.requirement.name)
            named.add((name, item.source))
            pin = pins.get(name)
            if req.marker is not None and not req.marker.evaluate({"python_version": PYTHON_VERSION}):
                continue
            if pin is None:
                problems.append(
                    f"{req.name}: {item.source} asks for {req} but {_rel(lock, root)} does not have it; run `make lock`"
                )
            elif req.specifier and not req.specifier.contains(pin.version, prereleases=True):
                problems.append(
                    f"{req.name}: {item.source} asks for {req} but {_rel(lock, root)} has {pin.version}; "
                    "run `make lock`"
                )
        for pin in pins.values():
            if not pin.hashes:
                problems.append(f"{pin.name}: {_rel(lock, root)} has no hash for it; run `make lock`")
            for source_file in pin.via:
                if (pin.name, source_file) not in named:
                    problems.append(
                        f"{pin.name}: {_rel(lock, root)} has it because of {source_file}, which no longer "
                        "names it; run `make lock`"
                    )
        if constrained_by and (directory / constrained_by).exists():
            wider = read_lock(directory / constrained_by, root)
            for pin in pins.values():
                other = wider.get(pin.name)
                if other is None or (other.version, set(other.hashes)) != (pin.version, set(pin.hashes)):
                    found = "nothing" if other is None else other.version
                    problems.append(
                        f"{pin.name}: {_rel(lock, root)} has {pin.version} but {constrained_by} has {found}; "
                        "they must hold the same files: run `make lock`"
                    )
    return problems


# --- pip's index settings, for uv -----------------------------------------------------------------


@dataclass(frozen=True)
class IndexSettings:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    cert: str | None = None
    timeout: str | None = None

    def uv_environment(self, primary_only=False):
        """Variables that make uv use these settings (URLs go through the environment, never a printed command)."""
        env = {}
        if self.index_url:
            env["UV_INDEX_URL"] = self.index_url
        if not primary_only:
            if self.extra_index_urls:
                env["UV_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)
                # pip takes the best version over all its indexes; the hashes still decide what installs.
                env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
            if self.find_links:
                env["UV_FIND_LINKS"] = ",".join(self.find_links)
            if self.no_index:
                env["UV_NO_INDEX"] = "1"
        if self.cert and "SSL_CERT_FILE" not in os.environ:
            env["SSL_CERT_FILE"] = self.cert
        if self.timeout:
            env["UV_HTTP_TIMEOUT"] = self.timeout.split(".")[0]
        return env


def pip_settings(python=sys.executable):
    """pip's effective index settings: its configuration files overridden by PIP_* variables."""
    try:
        listed = subprocess.run(
            [python, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    values = {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in listed.splitlines():
        match = re.match(r"^([^.=]+)\.([a-z-]+)=('.*')$", line)
        if match and match.group(1) in rank:
            section, key, quoted = match.groups()
            try:
                value = ast.literal_eval(quoted)  # pip prints repr(): a multi-line value has "\n" in it
            except (ValueError, SyntaxError):
                continue
            if rank[section] >= values.get(key, (-1, ""))[0]:
                values[key] = (rank[section], value)
    get = {key: value for key, (_, value) in values.items()}.get
    return IndexSettings(
        index_url=get("index-url"),
        extra_index_urls=tuple(get("extra-index-url", "").split()),
        find_links=tuple(get("find-links", "").split()),
        no_index=get("no-index", "").lower() in {"1", "true", "yes", "on"},
        cert=get("cert"),
        timeout=get("default-timeout") or get("timeout"),
    )


# --- uv, bootstrapped with pip --------------------------------------------------------------------


def pinned_uv_version(root=ROOT, source="bootstrap.lock"):
    """The uv version that bootstrap.lock pins (or, when locking, the one bootstrap.txt asks for)."""
    path = root / "requirements" / source
    if source.endswith(".lock"):
        pin = read_lock(path, root).get("uv") if path.exists() else None
        version = pin.version if pin else None
    else:
        wanted = [r.requirement for r in read_requirements(path, root) if canonicalize_name(r.requirement.name) == "uv"]
        pins = [s.version for r in wanted for s in r.specifier if s.operator == "=="]
        version = pins[0] if pins else None
    if version is None:
        raise EnvError(f"requirements/{source} does not pin uv (uv==VERSION): add the pin and run `make lock`")
    return version


def find_uv(root=ROOT, out=sys.stdout, source="bootstrap.lock"):
    """The pinned uv from .venv-bootstrap, installed there by pip on first use; None where it cannot be had.

    From bootstrap.lock (hashes required) for installs; from bootstrap.txt for `make lock`, which
    writes bootstrap.lock.
    """
    boot = root / BOOTSTRAP_DIR.name
    uv = boot / "bin" / "uv"
    want = pinned_uv_version(root, source)
    if _uv_version(uv) == want:
        return uv
    print(f"Installing uv {want} into {boot.name}/ with pip (once)", file=out, flush=True)
    staging = boot.with_name(boot.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    hashes = ["--require-hashes"] if source.endswith(".lock") else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location",
         *hashes, "--no-deps", "--target", str(staging), "-r", str(root / "requirements" / source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0 or _uv_version(staging / "bin" / "uv") != want:
        shutil.rmtree(staging, ignore_errors=True)
        reason = (result.stderr.strip().splitlines() or ["no uv binary for this platform"])[-1]
        print(f"uv {want} could not be installed ({reason}): using pip instead", file=out, flush=True)
        return None
    shutil.rmtree(boot, ignore_errors=True)
    staging.rename(boot)
    return uv


def _uv_version(uv):
    if not uv.exists():
        return None
    try:
        answer = subprocess.run([str(uv), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    match = re.match(r"uv (\S+)", answer.stdout)
    return match.group(1) if match else None


# --- sync ------------------------------------------------------------------------------------------


@dataclass
class Installer:
    uv: Path | None
    settings: IndexSettings = field(default_factory=IndexSettings)
    python: str = sys.executable

    @property
    def name(self):
        return f"uv {_uv_version(self.uv)}" if self.uv else "pip"

    def sync(self, env_dir, lock):
        """Make env_dir a Python 3.12 environment holding exactly the lock's packages, or raise EnvError."""
        if self.uv:
            self._sync_uv(env_dir, lock)
        else:
            self._sync_pip(env_dir, lock)

    def _sync_uv(self, env_dir, lock):
        env = {**os.environ, **self.settings.uv_environment(), "UV_PYTHON_DOWNLOADS": "never"}
        python = env_dir / "bin" / "python"
        if not _is_python312(python):
            _run([str(self.uv), "venv", "--quiet", "--no-config", "--clear", "--python", self.python, str(env_dir)],
                 env, f"creating {env_dir.name}")  # fmt: skip
        # --compile-bytecode: as pip does by default. Without it each module is compiled by the first process
        # that imports it, and every process again where bytecode is not written (PYTHONDONTWRITEBYTECODE).
        _run([str(self.uv), "pip", "sync", "--quiet", "--no-config", "--require-hashes", "--compile-bytecode",
              "--python", str(python), str(lock)],
             env, f"installing {_rel(lock, ROOT)} into {env_dir.name}")  # fmt: skip

    def _sync_pip(self, env_dir, lock):
        # pip cannot remove what the lock no longer has: a new environment holds exactly the lock.
        if env_dir.is_symlink():
            raise EnvError(f"{env_dir} is a link to a shared environment: not replacing it; sync it where it lives")
        shutil.rmtree(env_dir, ignore_errors=True)
        _run([self.python, "-m", "venv", str(env_dir)], os.environ, f"creating {env_dir.name}")
        _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--require-hashes", "--no-deps", "-r", str(lock)], os.environ,
             f"installing {_rel(lock, ROOT)} into {env_dir.name}")  # fmt: skip


def _is_python312(python):
    if not python.exists():
        return False
    try:
        answer = subprocess.run([str(python), "-c", "import sys; print(sys.version_info[:2])"],
                                capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    except OSError:
        return False
    return answer.stdout.strip() == "(3, 12)"


def _run(command, env, what):
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = "\n".join(line for line in (result.stderr or result.stdout).strip().splitlines()[-12:])
        hint = ""
        if "hash" in detail.lower():
            hint = (
                "\nA file whose hash the lock does not list was refused: if a pin changed, run `make lock`; "
                "otherwise the index served other bytes than the ones locked, and should be looked into."
            )
        raise EnvError(f"{what} failed:\n{detail}{hint}")
    return result


def sync(pairs, installer_choice="auto", root=ROOT, out=sys.stdout):
    """Fill each (environment, lock) pair; print how long each took."""
    problems = check(root)
    if problems:
        raise EnvError("the locks disagree with the requirements:\n  " + "\n  ".join(problems))
    uv = find_uv(root, out) if installer_choice != "pip" else None
    if installer_choice == "uv" and uv is None:
        raise EnvError("uv was asked for (INSTALLER=uv) but could not be installed; see the line above")
    installer = Installer(uv=uv, settings=pip_settings())
    for env_dir, lock in pairs:
        started = time.monotonic()
        installer.sync(env_dir, lock)
        count = len(read_lock(lock, root))
        print(
            f"{env_dir.name}: {count} packages from {_rel(lock, root)} with {installer.name} "
            f"in {time.monotonic() - started:.1f} s",
            file=out,
            flush=True,
        )


# --- lock ------------------------------------------------------------------------------------------


def lock(upgrade=False, root=ROOT, out=sys.stdout):
    """Compile every requirements/*.txt into its hashed lock; keep existing pins unless --upgrade."""
    directory = root / "requirements"
    for _, target, _ in LOCKS:
        previous = directory / target
        if previous.exists() and re.search(r"^(<{7}|>{7})", previous.read_text(), flags=re.MULTILINE):
            raise EnvError(
                f"requirements/{target} holds merge conflict markers: take either side "
                f"(git checkout --theirs requirements/{target}) and run `make lock` again"
            )
    uv = find_uv(root, out, source="bootstrap.txt")
    if uv is None:
        raise EnvError("`make lock` needs uv, which pip could not install (see the line above): fix that and retry")
    settings = pip_settings()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"UV_EXTRA_INDEX_URL", "UV_INDEX", "UV_FIND_LINKS", "UV_INDEX_STRATEGY"}
    }
    env.update(settings.uv_environment(primary_only=True))
    env["UV_CUSTOM_COMPILE_COMMAND"] = "make lock"
    for source, target, constrained_by in LOCKS:
        if not (directory / source).exists():
            continue
        command = [str(uv), "pip", "compile", "--quiet", "--no-config", "--generate-hashes",
                   "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
                   f"requirements/{source}", "--output-file", f"requirements/{target}"]  # fmt: skip
        if constrained_by:
            command += ["--constraint", f"requirements/{constrained_by}"]
        if upgrade:
            command.append("--upgrade")
        started = time.monotonic()
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EnvError(f"locking requirements/{source} failed:\n{result.stderr.strip()}")
        count = len(read_lock(directory / target, root))
        print(f"requirements/{target}: {count} packages in {time.monotonic() - started:.1f} s", file=out, flush=True)


# --- command line ----------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sync_parser = commands.add_parser("sync", help="fill environments from their locks")
    sync_parser.add_argument("pairs", nargs="+", metavar="ENV=LOCK")
    sync_parser.add_argument("--installer", choices=("auto", "uv", "pip"), default="auto")
    lock_parser = commands.add_parser("lock", help="compile requirements/*.txt into hashed locks")
    lock_parser.add_argument("--upgrade", action="store_true", help="take the newest versions the inputs allow")
    commands.add_parser("check", help="say where the locks disagree with the requirements")
    args = parser.parse_args(argv)
    try:
        if args.command == "sync":
            pairs = []
            for pair in args.pairs:
                env_dir, _, lock_file = pair.partition("=")
                if not lock_file:
                    raise EnvError(f"{pair!r}: expected ENV=LOCK, e.g. .venv=requirements/dev.lock")
                pairs.append((Path(env_dir).absolute(), Path(lock_file).absolute()))
            sync(pairs, installer_choice=args.installer)
        elif args.command == "lock":
            lock(upgrade=args.upgrade)
        else:
            problems = check()
            if problems:
                raise EnvError("the locks disagree with the requirements:\n  " + "\n  ".join(problems))
            print("the locks agree with the requirements")
    except EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
