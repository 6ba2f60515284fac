"""The production cut-over from SQLite as one resumable sequence of timed steps (``k8s_deploy --cutover FILE``).

1. ``preflight``: the SQLite file checked where it is (the caller's check: the copy's own preflight), so a bad
   file stops everything before anything changes.
2. ``maintenance_on``: the old deployment's write freeze (deploy/maintenance.py, the flag of this machine).
3. ``snapshot``: a consistent copy of the file (SQLite's online backup) and its SHA-256; the file itself is only
   read, and stays the way back.
4. ``data_services``: everything the render holds up to the workloads, applied; PostgreSQL and Redis ready.
   The app is held back: nothing serves from the empty database.
5. ``upload``: the snapshot written to S3 (deploy/aws/transfer.py says why S3).
6. ``copy``: one Job with the release's image, restricted, with its own ServiceAccount (whose pod identity
   alone may read the bucket) and NetworkPolicies: fetch the object and
   check its SHA-256, ``migrate``, ``migrate_from_sqlite --verify``; its log is kept.
7. ``deploy``: the whole release (``Deployer.deploy``: the migration Job, the app, the rollout).
8. ``smoke``: the app's Deployment has every replica ready, then two requests through the Kubernetes API's
   service proxy (``services/NAME:PORT/proxy``, so from wherever the operator is, without a route to the pods):
   the readiness path of the rendered probe and ``DEPLOY['cutover_smoke_path']``, as a visitor of the site
   (its first host, HTTPS as the balancer marks it); both must answer 200.

Each step's start, end and outcome are written to a state file (``build/cutover/APP.json``) as soon as they
happen; ``resume=True`` skips the steps that finished, so a cut-over killed between two steps continues where
it stopped. A failed step stops the sequence and leaves the old deployment in maintenance, with its file
untouched. The downtime is from the start of ``maintenance_on`` to the end of ``smoke``; switching the
traffic (DNS, the balancer) and lifting the freeze stay a person's decisions: the point of no return.
"""

import json
import math
import os
import shlex
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from deploy import maintenance
from deploy.aws import transfer
from deploy.k8s import exposure, names

STEPS = ("preflight", "maintenance_on", "snapshot", "data_services", "upload", "copy", "deploy", "smoke")
DATA_DIR = "/data"


class CutoverFailed(Exception):
    """A step failed; ``report`` holds every step so far, ``way_back`` what to do."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


def _now():
    return datetime.now(UTC).isoformat()


@dataclass
class CutoverState:
    """What the state file holds: the source, its snapshot and digest, the object, and each step's record."""

    source: str
    snapshot: str = ""
    sha256: str = ""
    size: int = 0
    bucket: str = ""
    key: str = ""
    job: str = ""
    source_stamp: list = field(default_factory=list)  # the file (and its -wal) as the snapshot read it
    steps: dict = field(default_factory=dict)  # name -> {started, ended, seconds, outcome, detail}

    @classmethod
    def load(cls, path):
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside it, flushed to the disk, then renamed over it: a kill (or a crash of the machine) at any
        # moment leaves either the previous record or this one, never half of one.
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        with open(temporary, "w") as stream:
            stream.write(json.dumps(self.__dict__, indent=2))
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(path)

    def done(self, step):
        return self.steps.get(step, {}).get("outcome") == "ok"

    def report(self):
        steps = [{"step": name, **self.steps[name]} for name in STEPS if name in self.steps]
        started = self.steps.get("maintenance_on", {}).get("started_at")
        ended = self.steps.get("smoke", {}).get("ended_at") if self.done("smoke") else None
        downtime = round(ended - started, 3) if started is not None and ended is not None else None
        return {
            "source": self.source,
            "sha256": self.sha256,
            "object": f"s3://{self.bucket}/{self.key}" if self.key else None,
            "job": self.job or None,
            "steps": steps,
            "downtime_seconds": downtime,
            "complete": all(self.done(name) for name in STEPS),
        }


def source_stamp(source):
    """Size and modification time of the SQLite file and of its ``-wal`` (where a WAL database's writes land
    first): what changes when anything writes to it."""
    stamp = []
    for path in (Path(source), Path(f"{source}-wal")):
        try:
            info = path.stat()
        except FileNotFoundError:
            stamp.append(None)
        else:
            stamp.append([info.st_size, info.st_mtime_ns])
    return stamp


def script(config, bucket, key, sha256):
    """The Job's shell script: fetch and check, migrate, copy and verify."""
    source = f"{DATA_DIR}/source.sqlite3"
    return (
        "set -eu; "
        # Bucket and key apart, not as a URL: the wiring rule reads scheme://name as an in-cluster host.
        f"python manage.py fetch_sqlite --bucket {shlex.quote(bucket)} --key {shlex.quote(key)} "
        f"--sha256 {shlex.quote(sha256)} "
        f"--to {source}; "
        "python manage.py migrate --noinput; "
        f"python manage.py migrate_from_sqlite --source {source} --verify --no-input --json"
    )


def storage_for(size):
    """The Job's ephemeral storage: the file, a tenth more, and room for the rest (Mi)."""
    return f"{math.ceil(size * 1.1 / 2**20) + 256}Mi"


NAME_ATTEMPTS = 5  # names (one per second) a cut-over's Job tries when the first is taken


def job_name(config, when):
    """The cut-over Job's name: the app's, and the time to the second (so each attempt keeps its Job and log)."""
    return names.resource_name(config.app_name, f"cutover-{when.strftime('%Y%m%d%H%M%S')}")


def cutover_manifests(config, bucket, key, sha256, size, now=None):
    """The Job, and what must exist before it (its ServiceAccount, its NetworkPolicies), from ``app/_cutover-*``."""
    from deploy.conf import DeploySecrets
    from deploy.k8s.render import _environment, build_context, render_template

    env = _environment(config)
    context = build_context(config, DeploySecrets(), True, env)
    context.update(
        cutover_job_name=job_name(config, now or datetime.now(UTC)),
        cutover_script=script(config, bucket, key, sha256),
        cutover_storage=storage_for(size),
        cutover_deadline_seconds=3600 + math.ceil(size / 2**20) * 2,
    )
    account, job = render_template(env, "app/_cutover-job.yaml", context)
    policies = render_template(env, "app/_cutover-networkpolicy.yaml", context)
    return job, [account, *policies]


def _finished(job):
    """Whether a Job has ended, succeeded or failed (a condition Complete or Failed that is True)."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


class Cutover:
    """Runs the steps in order, records each, and stops at the first failure.

    ``preflight(path)`` returns a list of problems (strings); ``s3`` is a boto3 S3 client; ``flag`` the
    maintenance flag of the old deployment; ``deployer`` a :class:`deploy.k8s.deploy.Deployer`.
    """

    def __init__(self, cluster, config, manifests, source, *, state_path, preflight, s3, flag, deployer,
                 timeout=600, progress=None, poll_interval=None):  # fmt: skip
        self.cluster, self.config, self.manifests = cluster, config, manifests
        self.source = Path(source)
        self.state_path = Path(state_path)
        self.preflight, self.s3, self.flag, self.deployer = preflight, s3, flag, deployer
        self.timeout, self.poll_interval = timeout, poll_interval
        self.progress = progress or (lambda message: None)
        self.state = None

    def run(self, resume=False):
        if resume:
            if not self.state_path.exists():
                raise CutoverFailed(
                    f"--resume: no cut-over state in {self.state_path}; start one without --resume.", None
                )
            self.state = CutoverState.load(self.state_path)
            if Path(self.state.source).resolve() != self.source.resolve():
                raise CutoverFailed(
                    f"--resume: the cut-over in {self.state_path} is of {self.state.source}, not {self.source}. "
                    "Resume that one, or remove the state file to start again.",
                    self.state.report(),
                )
            changed = self.state.source_stamp and self.state.source_stamp != source_stamp(self.source)
            if self.state.done("snapshot") and changed:
                raise CutoverFailed(
                    f"--resume: {self.source} changed after its snapshot was taken (its size or modification time, "
                    "or its -wal's, differ): something wrote to it during the freeze, or it was edited. This "
                    "cut-over carries the snapshot, so those changes would be lost. Nothing was done. Stop whatever "
                    f"writes to it (is MAINTENANCE_FILE the one the old deployment reads?), then remove "
                    f"{self.state_path} and run the cut-over again: a new snapshot is taken.",
                    self.state.report(),
                )
        else:
            # A cut-over stopped before maintenance_on changed nothing ("run the cut-over again", its message
            # says): only one that got that far must be resumed or dropped knowingly.
            previous = CutoverState.load(self.state_path) if self.state_path.exists() else None
            if previous is not None and not previous.report()["complete"] and "maintenance_on" in previous.steps:
                raise CutoverFailed(
                    f"An unfinished cut-over is recorded in {self.state_path}: continue it with --resume, or remove "
                    "the file to start again (the old deployment may still be in maintenance).",
                    previous.report(),
                )
            self.state = CutoverState(source=str(self.source))
        for name in STEPS:
            if self.state.done(name):
                self.progress(f"{name}: done before, skipped")
                continue
            self._step(name, getattr(self, f"_{name}"))
        return self.state.report()

    def _step(self, name, action):
        record = {"started": _now(), "started_at": time.time(), "outcome": "running"}
        self.state.steps[name] = record
        self.state.save(self.state_path)
        self.progress(f"{name}: started")
        try:
            detail = action()
        except Exception as exc:
            record.update(ended=_now(), ended_at=time.time(), outcome="failed", detail=str(exc))
            record["seconds"] = round(record["ended_at"] - record["started_at"], 3)
            self.state.save(self.state_path)
            raise CutoverFailed(self._failure(name, exc), self.state.report()) from exc
        record.update(ended=_now(), ended_at=time.time(), outcome="ok", detail=detail or "")
        record["seconds"] = round(record["ended_at"] - record["started_at"], 3)
        self.state.save(self.state_path)
        self.progress(f"{name}: ok in {record['seconds']:.1f} s")

    def _failure(self, name, exc):
        # Started is enough: a switch that failed half-way (the file written, the cache not) has frozen the site.
        frozen = "maintenance_on" in self.state.steps
        way_back = (
            f"The old deployment is {'still' if self.state.done('maintenance_on') else 'perhaps'} in maintenance and "
            f"{self.source} was not changed: to go back, lift the "
            "freeze there (python manage.py maintenance off); to go on, fix the cause and rerun with --resume."
            if frozen
            else "Nothing was changed: fix the cause and run the cut-over again."
        )
        return f"The cut-over stopped at step {name!r}: {exc}\n{way_back}"

    # --- the steps ------------------------------------------------------------------

    def _preflight(self):
        problems = self.preflight(self.source)
        if problems:
            shown = "\n  ".join(map(str, problems[:20]))
            raise RuntimeError(f"the SQLite file has {len(problems)} problem(s):\n  {shown}")
        if not self.config.cutover_bucket:
            raise RuntimeError("no bucket to carry the file: set DEPLOY['cutover_bucket'] (DEPLOY_CUTOVER_BUCKET).")
        return f"{self.source} passed"

    def _maintenance_on(self):
        state = maintenance.switch_on(self.flag, reason="cut-over to PostgreSQL")
        return f"on since {state['since']} ({', '.join(self.flag.where())})"

    def _snapshot(self):
        snapshot = self.state_path.with_name(f"{self.state_path.stem}-final.sqlite3")
        snapshot.unlink(missing_ok=True)
        stamp = source_stamp(self.source)
        source = sqlite3.connect(f"file:{self.source.resolve()}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(snapshot)
            with target:
                source.backup(target)
            target.close()
        finally:
            source.close()
        self.state.snapshot = str(snapshot)
        if stamp != source_stamp(self.source):
            raise RuntimeError(
                f"{self.source} changed while its snapshot was being taken: something still writes to it, so the "
                "freeze does not hold (is MAINTENANCE_FILE the one the old deployment reads? a cron job, a worker?)."
            )
        self.state.source_stamp = stamp
        self.state.sha256 = transfer.sha256_of(snapshot)
        self.state.size = snapshot.stat().st_size
        return f"{snapshot} ({self.state.size} bytes, sha256 {self.state.sha256})"

    def _data_services(self):
        from deploy.k8s.deploy import DATA_COMPONENTS, phases

        early, _jobs, _late = phases([m for m in self.manifests])
        self.deployer.apply_all(early)
        self.deployer.wait_all([m for m in early if names.component(m) in DATA_COMPONENTS])
        return f"{len(early)} objects applied; PostgreSQL and Redis ready; the app held back"

    def _upload(self):
        self.state.bucket = self.config.cutover_bucket
        self.state.key = transfer.object_key(self.config.app_name, self.state.sha256)
        transfer.upload(self.s3, self.state.snapshot, self.state.bucket, self.state.key, self.state.sha256)
        return f"s3://{self.state.bucket}/{self.state.key}"

    def _copy(self):
        from deploy.k8s.client import ClusterError
        from deploy.k8s.rollout import WaitFailure, wait_for

        now = datetime.now(UTC)
        job, before = cutover_manifests(self.config, self.state.bucket, self.state.key, self.state.sha256,
                                        self.state.size, now)  # fmt: skip
        for manifest in before:
            self.cluster.apply(manifest)
        for attempt in range(NAME_ATTEMPTS):
            # The name is by the second: within the second of an earlier attempt (a --resume, or a cut-over
            # started again), that attempt's Job has it. Never reuse it: the next second's name.
            job["metadata"]["name"] = job_name(self.config, now + timedelta(seconds=attempt))
            if job["metadata"]["name"] == self.state.job:
                continue
            self.state.job = job["metadata"]["name"]
            self.state.save(self.state_path)
            try:
                self.cluster.create(job)
                break
            except ClusterError as exc:
                if exc.status != 409:  # 409: a Job of that name exists (an earlier attempt's)
                    raise
                held = self.cluster.get_manifest(job)
                if held is not None and not _finished(held):
                    # Not a past attempt's: another cut-over's, copying now. Two copies must never run at once.
                    raise RuntimeError(
                        f"the Job {job['metadata']['name']} exists and has not finished: another cut-over is "
                        "copying now. Let it end (or delete that Job if it is abandoned), then rerun with --resume"
                    ) from None
        else:
            raise RuntimeError(f"a Job named {job['metadata']['name']} or by any of the {NAME_ATTEMPTS - 1} seconds "
                               "before exists already: delete the earlier attempts' Jobs, then rerun")  # fmt: skip
        try:
            wait_for(self.cluster, job, self.timeout, self.progress, interval=self.poll_interval)
        except WaitFailure as failure:
            raise RuntimeError(
                f"the Job {self.state.job} failed; its log ends with:\n{self._log(job)}\n{failure}"
            ) from None
        return f"Job {self.state.job} complete; its log ends with:\n{self._log(job)}"

    def _log(self, job):
        pods = self.cluster.list(
            "v1", "Pod", self.config.namespace, label_selector=f"job-name={job['metadata']['name']}"
        )
        if not pods:
            return "(no pod)"
        text = self.cluster.pod_log(self.config.namespace, pods[-1]["metadata"]["name"], tail=40) or ""
        return "\n".join(text.splitlines()[-40:])

    def _deploy(self):
        report = self.deployer.deploy(self.manifests)
        return f"revision {report.revision} {report.outcome}"

    def _smoke(self):
        app = names.resource_name(self.config.app_name)
        live = self.cluster.get_manifest(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": app, "namespace": self.config.namespace},
            }
        )
        status = (live or {}).get("status", {})
        wanted = (live or {}).get("spec", {}).get("replicas", 0)
        if not live or status.get("readyReplicas", 0) < max(wanted, 1):
            raise RuntimeError(f"the Deployment {app} has {status.get('readyReplicas', 0)} of {wanted} pods ready")
        service = names.service(self.config, "app")
        port, headers = smoke_request(self.config)
        answered = []
        for path in (readiness_path(self.manifests, app), self.config.cutover_smoke_path):
            code, _headers, text = self.cluster.service_proxy_get(service.namespace, service.name, port, path, headers)
            refused = _api_status(text)
            if refused is not None:  # the API server's own answer, not the app's
                hint = " Grant get on services/proxy in that namespace to this identity (RBAC)." if code == 403 else ""
                raise RuntimeError(
                    f"GET {path} through the API's service proxy (Service {service.name}:{port}): the API server "
                    f"answered {code}: {refused}.{hint}"
                )
            if code != 200:
                first = " ".join(text.split())[:200]
                raise RuntimeError(
                    f"GET {path} through the API's service proxy (Service {service.name}:{port}, Host "
                    f"{headers.get('Host', '-')}) answered {code}, not 200: {first}"
                )
            answered.append(f"{path} 200")
        return (
            f"Deployment {app}: {status.get('readyReplicas')} of {wanted} pods ready; through the service proxy "
            f"{service.name}:{port}: {', '.join(answered)}"
        )


def _api_status(text):
    """The message of a ``Status`` the API server answered with itself (no endpoint, forbidden), or None."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if isinstance(document, dict) and document.get("kind") == "Status" and document.get("apiVersion") == "v1":
        return document.get("message") or document.get("reason") or "no message"
    return None


def readiness_path(manifests, deployment):
    """The readiness probe's path in the rendered Deployment (the template is its one home)."""
    for manifest in manifests:
        if manifest.get("kind") == "Deployment" and manifest["metadata"]["name"] == deployment:
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                probe = container.get("readinessProbe", {}).get("httpGet")
                if probe:
                    return probe["path"]
    raise RuntimeError(f"the release renders no Deployment {deployment} with an HTTP readiness probe")


def smoke_request(config):
    """The Service port and headers of a request that Django takes for a visitor's over HTTPS (if the site has it).

    The API server's service proxy keeps the client's ``Host`` (so it must be one of ``ALLOWED_HOSTS``) and adds
    no ``X-Forwarded-Proto``: the request goes to the port that the balancer's HTTPS listener uses, and carries
    the header where the app trusts it (deploy/k8s/exposure.py), so a redirecting Django serves the page.
    """
    seen = exposure.exposure(config)
    headers = {"Host": config.hosts[0]} if config.hosts else {}
    if seen.trusted_https_marker == exposure.FORWARDED_PROTO:
        headers["X-Forwarded-Proto"] = "https"
    return seen.ports[-1].service_port_name, headers
