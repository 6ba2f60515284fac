"""Creating, updating and deleting a CloudFormation stack, as ``aws_provision`` does it.

A new stack is created directly; an existing one is changed only through a change set, so what will change is
known (and shown) before anything does, and ``plan`` stops there. Every AWS call is wrapped: a refusal, a missing
permission or a throttled request becomes a :class:`StackError` saying what was being done, to which stack, and
what to do about it.
"""

import json
import re
import time
from dataclasses import asdict, dataclass, field

import yaml

from deploy.aws.cfn.template import to_text
from deploy.aws.session import AwsError, call, sentence

TERMINAL = re.compile(r"_(COMPLETE|FAILED)$")
STACK_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9]{0,127}")  # CloudFormation's rule for a stack's name
CAPABILITIES = ["CAPABILITY_NAMED_IAM", "CAPABILITY_IAM"]


class StackError(AwsError):
    """A stack could not be created, changed or deleted; ``report`` is how far it got (None before any change)."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


@dataclass
class StackReport:
    """What ``apply_stack`` did. ``outcome``: 'unchanged' (the stack already has this template), 'no-changes' (a
    change set found nothing to do), 'planned' (``plan``: changes shown, nothing executed), 'created', 'updated'.
    """

    stack: str
    status: str | None
    outcome: str
    changes: list = field(default_factory=list)
    executed: bool = False
    outputs: dict = field(default_factory=dict)
    failed_resource: str = ""
    reason: str = ""

    def as_dict(self):
        document = asdict(self)
        if not self.failed_resource:
            del document["failed_resource"], document["reason"]
        return document


def _call(doing, function, **kwargs):
    try:
        return call(doing, function, **kwargs)
    except StackError:
        raise
    except AwsError as exc:
        raise StackError(str(exc)) from None


def _missing(exc):
    return "does not exist" in str(exc)


DELETE_HINT = "delete it (manage.py aws_provision --delete, with this run's other options), then run again"
# Stacks CloudFormation will neither update nor create again: what happened, and what to do.
STUCK = {
    "ROLLBACK_COMPLETE": f"its creation failed and was rolled back; such a stack can only be deleted: {DELETE_HINT}",
    "ROLLBACK_FAILED": f"its creation failed and so did the rollback: {DELETE_HINT}",
    "DELETE_FAILED": "a deletion failed; empty or remove the resource its events name, then delete it again "
    "(manage.py aws_provision --delete)",
    "UPDATE_ROLLBACK_FAILED": "an update failed and so did its rollback; continue the rollback ('aws cloudformation "
    "continue-update-rollback --stack-name {name}'), then run again",
}


def _check_status(name, status):
    """StackError, before any change, when stack ``name`` in ``status`` cannot be changed now."""
    if status in STUCK:
        raise StackError(f"Stack {name} is {status}: {STUCK[status].format(name=name)}. Nothing was changed.")
    if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise StackError(
            f"Stack {name} is {status}: another change is under way. Wait until it settles ('aws cloudformation "
            f"describe-stacks --stack-name {name}'), then run again. Nothing was changed."
        )


def check_name(name):
    """StackError, before any AWS call, when CloudFormation would refuse ``name`` as a stack's name."""
    if not STACK_NAME.fullmatch(name):
        raise StackError(
            f"{name!r} is not a CloudFormation stack name: letters, digits and '-', starting with a letter, at most "
            "128 characters. Correct DEPLOY['aws_stack_name'] (or the app or environment name it is made from)."
        )


def current_template(cloudformation, name):
    """The deployed template (dict) and stack status, or (None, None) when there is no such stack."""
    try:
        stacks = _call(f"Reading stack {name}", cloudformation.describe_stacks, StackName=name)["Stacks"]
    except StackError as exc:
        if _missing(exc):
            return None, None
        raise
    if stacks[0]["StackStatus"] == "REVIEW_IN_PROGRESS":  # made by a change set never executed: no template yet
        return None, "REVIEW_IN_PROGRESS"
    body = _call(
        f"Reading the template of stack {name}", cloudformation.get_template, StackName=name, TemplateStage="Original"
    )["TemplateBody"]
    if isinstance(body, str):
        body = yaml.safe_load(body)
    return body, stacks[0]["StackStatus"]


def plan_change_set(cloudformation, name, template, exists, role_arn=""):
    """Create a change set of ``template`` for stack ``name`` and wait for it; its id and its changes."""
    created = _call(
        f"Creating a change set for stack {name}",
        cloudformation.create_change_set,
        StackName=name,
        ChangeSetName=f"aws-provision-{int(time.time())}",
        ChangeSetType="UPDATE" if exists else "CREATE",
        TemplateBody=to_text(template),
        Capabilities=CAPABILITIES,
        **({"RoleARN": role_arn} if role_arn else {}),
    )
    for _ in range(600):
        described = _call(
            f"Reading the change set of stack {name}",
            cloudformation.describe_change_set,
            ChangeSetName=created["Id"],
            StackName=name,
        )
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            break
        time.sleep(1)
    empty = described["Status"] == "FAILED" and "didn't contain changes" in described.get("StatusReason", "")
    if described["Status"] != "CREATE_COMPLETE" and not empty:
        # Leave nothing behind: the change set, and the empty stack a CREATE change set made.
        _discard(cloudformation, name, created["Id"], exists)
        if described["Status"] == "FAILED":
            raise StackError(f"The change set for {name} failed: {described.get('StatusReason')}. Nothing was changed.")
        raise StackError(
            f"The change set for {name} is still {described['Status']} after 600 s: it was deleted and nothing was "
            "changed. Run again."
        )
    changes = [
        {
            "action": c["ResourceChange"]["Action"],
            "resource": c["ResourceChange"]["LogicalResourceId"],
            "type": c["ResourceChange"]["ResourceType"],
            "replacement": c["ResourceChange"].get("Replacement", ""),
        }
        for c in described.get("Changes", [])
    ]
    return created["Id"], changes


def _discard(cloudformation, name, change_set, exists):
    """Delete a change set not to be executed and, for a new stack, the empty stack (REVIEW_IN_PROGRESS) it made."""
    _call(f"Deleting the change set of stack {name}", cloudformation.delete_change_set,
          ChangeSetName=change_set, StackName=name)  # fmt: skip
    if not exists:
        _call(f"Deleting the empty stack {name} the change set made", cloudformation.delete_stack, StackName=name)


def stream_events(cloudformation, name, since, progress, timeout=3600):
    """Pass stack events to ``progress`` as they arrive until the stack settles; return its final status, the
    first failure (resource, type, reason) or None, and its outputs."""
    seen, deadline, failure = set(), time.monotonic() + timeout, None
    while True:
        events = _call("Reading stack events", cloudformation.describe_stack_events, StackName=name)["StackEvents"]
        for event in reversed(events):
            if event["EventId"] in seen or event["Timestamp"].timestamp() < since:
                continue
            seen.add(event["EventId"])
            status, reason = event["ResourceStatus"], event.get("ResourceStatusReason", "")
            progress(f"{event['LogicalResourceId']:<32} {status:<24} {reason}")
            if status.endswith("_FAILED") and failure is None and "cancelled" not in reason.lower():
                failure = (event["LogicalResourceId"], event.get("ResourceType", ""), reason)
        stack = _call("Reading the stack", cloudformation.describe_stacks, StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if TERMINAL.search(status) and not status.endswith("_IN_PROGRESS"):
            return status, failure, {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if time.monotonic() > deadline:
            raise StackError(
                f"Stack {name} is still {status} after {timeout} s. Follow it in the CloudFormation console (or "
                f"'aws cloudformation describe-stack-events --stack-name {name}') and run again once it settles."
            )
        time.sleep(5)


def _change_line(change):
    replacement = f"  (replacement: {change['replacement']})" if change["replacement"] else ""
    return f"  {change['action']:<8} {change['resource']:<34} {change['type']}{replacement}"


def apply_stack(cloudformation, name, template, *, plan=False, role_arn="", progress=lambda line: None):
    """Make stack ``name`` have ``template``: create it, or update it through a change set (``plan``: show the
    change set, execute nothing, leave nothing behind). ``role_arn``: the role CloudFormation acts as.

    Lines for a person go to ``progress`` as the run goes (each change, each stack event). Returns a
    :class:`StackReport`; raises :class:`StackError` when AWS refuses a call, or when the stack ends failed or
    rolled back (its ``report`` then names the first resource that failed, and why).
    """
    check_name(name)
    deployed, status = current_template(cloudformation, name)
    if status is not None:
        _check_status(name, status)
    if deployed is not None and json.loads(json.dumps(deployed)) == json.loads(to_text(template)):
        return StackReport(name, status, "unchanged", outputs=stack_outputs(cloudformation, name))
    if status == "REVIEW_IN_PROGRESS" and not plan:
        # An empty stack, no resource and no template, left by a CREATE change set never executed (an interrupted
        # plan): create_stack refuses its name while it is there.
        progress(f"Stack {name} is an empty stack a plan left (REVIEW_IN_PROGRESS): deleting it first.")
        delete_stack(cloudformation, name, progress)
        status = None
    started = time.time() - 1
    role = {"RoleARN": role_arn} if role_arn else {}
    if status is None and not plan:
        # A new stack is created directly; updates (and plans) go through change sets.
        progress(f"Creating stack {name} ({len(template['Resources'])} resources):")
        _call(f"Creating stack {name}", cloudformation.create_stack, StackName=name, TemplateBody=to_text(template),
              Capabilities=CAPABILITIES, OnFailure="ROLLBACK", **role)  # fmt: skip
        changes = [{"action": "Add", "resource": r, "type": v["Type"], "replacement": ""}
                   for r, v in template["Resources"].items()]  # fmt: skip
        return _finish(cloudformation, name, started, StackReport(name, status, "created", changes), progress)
    exists = deployed is not None  # a plan of an empty stack (REVIEW_IN_PROGRESS) goes through a CREATE change set
    change_set, changes = plan_change_set(cloudformation, name, template, exists=exists, role_arn=role_arn)
    for change in changes:
        progress(_change_line(change))
    if not changes or plan:
        _discard(cloudformation, name, change_set, exists)
        return StackReport(name, status, "planned" if changes else "no-changes", changes)
    try:
        _call(f"Executing the change set of stack {name}", cloudformation.execute_change_set,
              ChangeSetName=change_set, StackName=name)  # fmt: skip
    except StackError as exc:
        raise StackError(f"{sentence(exc)} Nothing was changed.") from None
    return _finish(cloudformation, name, started, StackReport(name, status, "updated", changes), progress)


def _finish(cloudformation, name, started, report, progress):
    final, failure, outputs = stream_events(cloudformation, name, started, progress)
    report.status, report.outputs, report.executed = final, outputs, True
    if failure or not final.endswith("COMPLETE") or "ROLLBACK" in final:
        resource, kind, reason = failure or ("?", "", final)
        report.failed_resource, report.reason = resource, reason
        message = sentence(f"Stack {name} ended {final}: {resource} ({kind}) failed: {reason}")
        raise StackError(f"{message} {_after_failure(name, final)}", report)
    return report


def _after_failure(name, final):
    """What to do after a create or update that ended ``final``."""
    if final == "UPDATE_ROLLBACK_COMPLETE":
        return "The stack is back as it was before this run: fix the cause, then run again."
    if final in STUCK:
        return f"Fix the cause; the stack is left {final}: {STUCK[final].format(name=name)}."
    return "Fix the cause, then run again."


def stack_outputs(cloudformation, name):
    """The outputs of stack ``name`` (key: value)."""
    found = _call(f"Reading stack {name}", cloudformation.describe_stacks, StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}


def stack_status(cloudformation, name):
    """The status of stack ``name``, or None when there is no such stack."""
    check_name(name)
    try:
        return _call(f"Reading stack {name}", cloudformation.describe_stacks, StackName=name)["Stacks"][0][
            "StackStatus"
        ]
    except StackError as exc:
        if _missing(exc):
            return None
        raise


def delete_stack(cloudformation, name, progress=lambda line: None):
    """Delete stack ``name`` (retained resources stay) and wait for it; its final status, or None when there was no
    such stack (CloudFormation accepts deleting a stack that is not there: that is not a deletion to report)."""
    check_name(name)
    if stack_status(cloudformation, name) is None:
        return None
    started = time.time() - 1
    _call(f"Deleting stack {name}", cloudformation.delete_stack, StackName=name)
    try:
        final, failure, _ = stream_events(cloudformation, name, started, progress)
    except StackError as exc:
        if not _missing(exc):
            raise
        final, failure = "DELETE_COMPLETE", None
    if failure:
        raise StackError(
            f"Deleting stack {name} failed: {failure[0]}: {failure[2]}. Fix or empty that resource, then delete again."
        )
    return final
