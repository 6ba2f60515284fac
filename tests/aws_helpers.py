"""What the moto-backed AWS tests share: a clean fake-credential environment, and the infrastructure template
as moto's CloudFormation can create it."""

import os

from deploy.aws.cfn import stack


def fake_aws_environment(monkeypatch, region):
    """moto's credentials and ``region``, and none of the caller's AWS_ or DEPLOY_ variables; the stack's polling
    does not sleep (moto answers at once)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "DEPLOY_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setattr(stack.time, "sleep", lambda seconds: None)


def without_cluster_output(render):
    """``render`` (a render_template) without the ClusterName output: moto creates no EKS cluster from
    CloudFormation (it warns and skips it), and one output it cannot resolve makes it drop every output."""

    def template(config):
        rendered = render(config)
        rendered["Outputs"].pop("ClusterName")
        return rendered

    return template
