"""Where the app finds the RDS instance of postgres_mode 'rds': the outputs of the stack aws_provision made.

Nobody copies the endpoint by hand: k8s_deploy reads the stack's DatabaseAddress, DatabasePort and DatabaseCidr
outputs and renders with them as postgres_host, postgres_port and postgres_cidr (the 'external' wiring: the
DATABASE_URL's host, the egress NetworkPolicy's ipBlock). The master user's secret ARN is an output too; its value
is never read here (the app connects as its own user, docs/high-availability.md#managed-postgresql-rds).
"""

from deploy.aws import cfn
from deploy.aws.session import AwsError, call
from deploy.conf import ConfigError, with_discovered

OUTPUTS = {"DatabaseAddress": "postgres_host", "DatabasePort": "postgres_port", "DatabaseCidr": "postgres_cidr"}


def stack_outputs(cloudformation, name):
    """The outputs of stack ``name`` as a dict; AwsError naming the stack when it is missing or not ready."""
    try:
        stacks = call(f"Reading stack {name}", cloudformation.describe_stacks, StackName=name)["Stacks"]
    except AwsError as exc:
        said = str(exc).rstrip()  # AWS's message ("Stack with id X does not exist") ends without a full stop
        said += "" if said.endswith((".", "!", "?")) else "."
        raise AwsError(f"{said} Create it with 'manage.py aws_provision' (DEPLOY['postgres_mode'] 'rds').") from None
    stack = stacks[0]
    status = stack["StackStatus"]
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"):
        raise AwsError(f"Stack {name} is {status}: its outputs are not usable. Wait for it, or fix it with "
                       "'manage.py aws_provision'.")  # fmt: skip
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def wire(config, cloudformation):
    """``config`` with the RDS instance's host, port and CIDR from the stack (postgres_mode 'rds'), else as is."""
    if config.postgres_mode != "rds":
        return config
    name = cfn.stack_name(config)
    outputs = stack_outputs(cloudformation, name)
    missing = [key for key in OUTPUTS if not outputs.get(key)]
    if missing:
        raise AwsError(
            f"Stack {name} has no {', '.join(missing)} output: it was made without DEPLOY['postgres_mode'] 'rds'. "
            "Run 'manage.py aws_provision' with these settings to add the database."
        )
    try:
        port = int(outputs["DatabasePort"])
    except ValueError:
        raise AwsError(f"Stack {name}'s DatabasePort output {outputs['DatabasePort']!r} is not a port.") from None
    try:
        return with_discovered(
            config,
            f"Stack {name}",
            postgres_host=outputs["DatabaseAddress"],
            postgres_port=port,
            postgres_cidr=outputs["DatabaseCidr"],
        )
    except ConfigError as exc:
        raise AwsError(str(exc)) from None
