"""deploy.aws.cfn.stack: creating, updating (through change sets), planning and deleting a stack, against moto's
CloudFormation; the paths moto cannot take (a stack that rolls back, a refused call) with botocore's Stubber."""

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from deploy.aws.cfn import stack
from deploy.aws.cfn.stack import StackError, apply_stack, delete_stack
from tests.aws_helpers import fake_aws_environment

REGION = "eu-west-1"
TOPIC = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "alerts"}}
ONE = {"Resources": {"Topic": TOPIC}, "Outputs": {"TopicArn": {"Value": {"Ref": "Topic"}}}}
TWO = {**ONE, "Resources": {**ONE["Resources"], "Queue": {"Type": "AWS::SQS::Queue", "Properties": {
    "QueueName": "jobs"}}}}  # fmt: skip


@pytest.fixture
def client(monkeypatch):
    fake_aws_environment(monkeypatch, REGION)
    with mock_aws():
        yield boto3.client("cloudformation", region_name=REGION)


def deployed(client, name="s"):
    body = client.get_template(StackName=name)["TemplateBody"]
    resources = {r["LogicalResourceId"] for r in client.describe_stack_resources(StackName=name)["StackResources"]}
    return body, resources


def test_a_new_stack_is_created_its_events_passed_on_and_its_outputs_read(client):
    lines = []
    report = apply_stack(client, "s", ONE, progress=lines.append)
    assert (report.outcome, report.status, report.executed) == ("created", "CREATE_COMPLETE", True)
    assert report.changes == [{"action": "Add", "resource": "Topic", "type": "AWS::SNS::Topic", "replacement": ""}]
    assert report.outputs == {"TopicArn": f"arn:aws:sns:{REGION}:123456789012:alerts"}
    assert lines[0] == "Creating stack s (1 resources):" and any("CREATE_COMPLETE" in line for line in lines)
    assert deployed(client)[1] == {"Topic"}
    assert report.as_dict().keys() == {"stack", "status", "outcome", "changes", "executed", "outputs"}


def test_an_update_goes_through_a_change_set_that_is_shown_then_executed(client):
    apply_stack(client, "s", ONE)
    lines = []
    report = apply_stack(client, "s", TWO, progress=lines.append)
    assert (report.outcome, report.executed) == ("updated", True)
    assert report.status.startswith("UPDATE_COMPLETE")
    assert [(c["action"], c["resource"]) for c in report.changes] == [("Add", "Queue")]
    assert lines[0].split() == ["Add", "Queue", "AWS::SQS::Queue"]
    assert deployed(client)[1] == {"Topic", "Queue"}
    assert client.list_change_sets(StackName="s")["Summaries"] == [] or all(
        c["ExecutionStatus"] == "EXECUTE_COMPLETE" for c in client.list_change_sets(StackName="s")["Summaries"]
    )


def test_the_same_template_again_is_unchanged_without_a_change_set(client, monkeypatch):
    apply_stack(client, "s", ONE)
    monkeypatch.setattr(stack, "plan_change_set", lambda *a, **k: pytest.fail("no change set for the same template"))
    report = apply_stack(client, "s", ONE)
    assert (report.outcome, report.executed, report.changes) == ("unchanged", False, [])
    assert report.status == "CREATE_COMPLETE"
    # The stack's outputs all the same: a CI job reads the settings from any run's report.
    assert report.outputs == {"TopicArn": f"arn:aws:sns:{REGION}:123456789012:alerts"}


def test_a_change_set_with_nothing_to_do_is_deleted_and_nothing_executed(client):
    apply_stack(client, "s", ONE)
    report = apply_stack(client, "s", {**ONE, "Description": "a new description, no resource changes"})
    assert (report.outcome, report.executed, report.changes) == ("no-changes", False, [])
    assert client.list_change_sets(StackName="s")["Summaries"] == []
    assert "Description" not in deployed(client)[0]


def test_a_plan_shows_the_changes_and_leaves_the_stack_as_it_was(client):
    apply_stack(client, "s", ONE)
    report = apply_stack(client, "s", TWO, plan=True)
    assert (report.outcome, report.executed) == ("planned", False)
    assert [(c["action"], c["resource"]) for c in report.changes] == [("Add", "Queue")]
    assert deployed(client)[1] == {"Topic"}
    assert client.list_change_sets(StackName="s")["Summaries"] == []


def test_a_plan_of_a_new_stack_leaves_no_stack_behind(client):
    report = apply_stack(client, "new", ONE, plan=True)
    assert (report.outcome, report.executed, len(report.changes)) == ("planned", False, 1)
    live = [s for s in client.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    assert live == []


def test_a_refused_change_set_execution_changes_nothing_and_says_why(client):
    apply_stack(client, "s", ONE)
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName="taken")
    taken = {**ONE, "Resources": {**ONE["Resources"], "Repository": {
        "Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": "taken"}}}}  # fmt: skip
    with pytest.raises(StackError, match=r"^Executing the change set of stack s: .*taken.*\. Nothing was changed\.$"):
        apply_stack(client, "s", taken)
    # (moto's describe_stack_resources tries the failed change again: the template and status say what is left.)
    body = client.get_template(StackName="s")["TemplateBody"]
    assert "Repository" not in (body if isinstance(body, dict) else json.loads(body))["Resources"]
    assert client.describe_stacks(StackName="s")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"


def _stubbed(responses):
    client = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_client_error("describe_stacks", "ValidationError", "Stack with id s does not exist")
    for method, response in responses:
        if isinstance(response, Exception):
            stubber.add_client_error(method, *response.args)
        else:
            stubber.add_response(method, response)
    return client, stubber


def test_a_create_that_rolls_back_is_reported_with_the_resource_that_failed(client):
    now = datetime.now(UTC)
    event = {"StackId": "id", "EventId": "e1", "StackName": "s", "LogicalResourceId": "Topic",
             "ResourceType": "AWS::SNS::Topic", "Timestamp": now, "ResourceStatus": "CREATE_FAILED",
             "ResourceStatusReason": "Topic limit exceeded"}  # fmt: skip
    stacks = {"Stacks": [{"StackName": "s", "CreationTime": now, "StackStatus": "ROLLBACK_COMPLETE"}]}
    cloudformation, stubber = _stubbed([
        ("create_stack", {"StackId": "id"}),
        ("describe_stack_events", {"StackEvents": [event]}),
        ("describe_stacks", stacks),
    ])  # fmt: skip
    with stubber, pytest.raises(StackError) as excinfo:
        apply_stack(cloudformation, "s", ONE)
    stubber.assert_no_pending_responses()  # and nothing after: no retry, no deletion of what is left
    assert str(excinfo.value) == (
        "Stack s ended ROLLBACK_COMPLETE: Topic (AWS::SNS::Topic) failed: Topic limit exceeded. Fix the cause; the "
        "stack is left ROLLBACK_COMPLETE: its creation failed and was rolled back; such a stack can only be deleted: "
        "delete it (manage.py aws_provision --delete, with this run's other options), then run again."
    )
    report = excinfo.value.report
    assert (report.status, report.executed, report.failed_resource, report.reason) == (
        "ROLLBACK_COMPLETE", True, "Topic", "Topic limit exceeded")  # fmt: skip
    assert report.as_dict()["failed_resource"] == "Topic"


def test_a_refused_call_says_what_was_being_done_and_how_to_fix_it(client):
    cloudformation, stubber = _stubbed([("create_stack", Exception("AccessDenied", "not allowed: CreateStack"))])
    with stubber, pytest.raises(StackError) as excinfo:
        apply_stack(cloudformation, "s", ONE)
    assert str(excinfo.value).startswith("Creating stack s: access denied (AccessDenied): not allowed: CreateStack")
    assert "Check the IAM permissions" in str(excinfo.value)
    assert excinfo.value.report is None
    stubber.assert_no_pending_responses()


def test_a_stack_still_moving_after_the_timeout_is_an_error_naming_it(client):
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(cloudformation)
    stubber.add_response("describe_stack_events", {"StackEvents": []})
    stubber.add_response("describe_stacks", {"Stacks": [
        {"StackName": "s", "CreationTime": datetime.now(UTC), "StackStatus": "UPDATE_IN_PROGRESS"}]})  # fmt: skip
    with stubber, pytest.raises(StackError, match=r"Stack s is still UPDATE_IN_PROGRESS after 0 s\. .*run again"):
        stack.stream_events(cloudformation, "s", 0, lambda line: None, timeout=0)


def test_delete_waits_for_the_stack_to_go(client):
    apply_stack(client, "s", ONE)
    lines = []
    assert delete_stack(client, "s", lines.append) == "DELETE_COMPLETE"
    assert [s["StackStatus"] for s in client.list_stacks()["StackSummaries"]] == ["DELETE_COMPLETE"]
    assert boto3.client("sns", region_name=REGION).list_topics()["Topics"] == []


def _set_status(name, status):
    from moto.cloudformation.models import cloudformation_backends

    for found in cloudformation_backends["123456789012"][REGION].stacks.values():
        if found.name == name:
            found.status = status


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        ("ROLLBACK_COMPLETE", r"can only be deleted: delete it \(manage.py aws_provision --delete"),
        ("ROLLBACK_FAILED", r"delete it \(manage.py aws_provision --delete"),
        ("DELETE_FAILED", r"empty or remove the resource its events name"),
        ("UPDATE_ROLLBACK_FAILED", r"'aws cloudformation continue-update-rollback --stack-name s'"),
        ("UPDATE_IN_PROGRESS", r"another change is under way. Wait until it settles"),
    ],
)
@pytest.mark.parametrize("template", [ONE, TWO], ids=["same-template", "changed-template"])
@pytest.mark.parametrize("plan", [False, True], ids=["apply", "plan"])
def test_a_stack_that_cannot_be_changed_now_is_refused_with_what_to_do_and_left_as_it_is(
    client, status, fix, template, plan, monkeypatch
):
    # A failed create leaves ROLLBACK_COMPLETE: running again with the same template said "unchanged" (ok), and
    # with another one failed at the change set without saying the stack must be deleted first.
    apply_stack(client, "s", ONE)
    _set_status("s", status)
    monkeypatch.setattr(stack, "plan_change_set", lambda *a, **k: pytest.fail("no change set on a stuck stack"))
    with pytest.raises(StackError, match=rf"^Stack s is {status}: .*{fix}.*Nothing was changed\.$") as excinfo:
        apply_stack(client, "s", template, plan=plan)
    assert excinfo.value.report is None
    assert deployed(client)[1] == {"Topic"}
    assert client.describe_stacks(StackName="s")["Stacks"][0]["StackStatus"] == status


def test_an_empty_stack_an_interrupted_plan_left_is_created_through_a_change_set(client):
    # A CREATE change set never executed leaves a stack REVIEW_IN_PROGRESS with no resource and no template.
    client.create_change_set(StackName="s", ChangeSetName="left", ChangeSetType="CREATE", TemplateBody=json.dumps(ONE))
    planned = apply_stack(client, "s", ONE, plan=True)
    assert (planned.outcome, [c["resource"] for c in planned.changes]) == ("planned", ["Topic"])
    client.create_change_set(StackName="s", ChangeSetName="left", ChangeSetType="CREATE", TemplateBody=json.dumps(ONE))
    report = apply_stack(client, "s", ONE)
    assert (report.outcome, report.status, report.executed) == ("created", "CREATE_COMPLETE", True)
    assert deployed(client)[1] == {"Topic"}


@pytest.mark.parametrize("name", ["shop_prod", "1shop", "shop.prod", "s" * 129, ""])
def test_a_name_cloudformation_refuses_is_refused_before_any_aws_call(name):
    # moto takes any name; CloudFormation answers a ValidationError about a regular expression.
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(cloudformation)  # no response queued: any call would fail the test
    with stubber, pytest.raises(StackError, match=r"is not a CloudFormation stack name: .*DEPLOY\['aws_stack_name'\]"):
        apply_stack(cloudformation, name, ONE)
    with stubber, pytest.raises(StackError, match=r"is not a CloudFormation stack name"):
        delete_stack(cloudformation, name)


@pytest.mark.parametrize(
    ("final", "message"),
    [
        ("FAILED", r"^The change set for s failed: Template format error: bad\. Nothing was changed\.$"),
        ("CREATE_IN_PROGRESS", r"^The change set for s is still CREATE_IN_PROGRESS after 600 s: it was deleted"),
    ],
)
def test_a_plan_whose_change_set_fails_leaves_neither_the_change_set_nor_an_empty_stack(client, final, message):
    # A failed CREATE change set left itself and its REVIEW_IN_PROGRESS stack behind; one still computing after
    # the wait was reported as a plan with no change.
    described = {"Status": final, "StatusReason": "Template format error: bad", "Changes": []}
    cloudformation, stubber = _stubbed([
        ("create_change_set", {"Id": "cs", "StackId": "id"}),
        *[("describe_change_set", described)] * (1 if final == "FAILED" else 600),
        ("delete_change_set", {}),
        ("delete_stack", {}),
    ])  # fmt: skip
    with stubber, pytest.raises(StackError, match=message):
        apply_stack(cloudformation, "s", ONE, plan=True)
    stubber.assert_no_pending_responses()  # the change set and the empty stack were deleted
