"""An environment's secret values from AWS Secrets Manager (DEPLOY['secrets_name']).

The secret is one JSON object whose keys are the environment variables that
would otherwise carry the values (``DEPLOY_SECRET_KEY``,
``DEPLOY_POSTGRES_PASSWORD``, ``DEPLOY_REDIS_PASSWORD``,
``DEPLOY_POSTGRES_SUPERUSER_PASSWORD``). So a pipeline needs
no secret of its own: its role may read this environment's secret, and the
values go from AWS straight into the cluster's Secret. Nothing here prints,
logs or puts a value in an exception.
"""

import json

from deploy.aws.session import AwsError, call
from deploy.conf import DeploySecrets


def read_secrets(session, name):
    """The :class:`DeploySecrets` stored in secret ``name``."""
    client = session.client("secretsmanager")
    answer = call(f"Reading secret {name!r} from AWS Secrets Manager", client.get_secret_value, SecretId=name)
    try:
        values = json.loads(answer.get("SecretString") or "")
    except ValueError:
        values = None
    keys = DeploySecrets.ENV
    if not isinstance(values, dict) or not all(isinstance(values.get(env, ""), str) for env in keys.values()):
        # The text itself is never shown: it may be the secret.
        example = ", ".join(f'"{env}": "..."' for env in keys.values())
        raise AwsError(f"Secret {name!r} is not a JSON object of strings. Store one such as {{{example}}}.")
    unknown = sorted(set(values) - set(keys.values()))
    if unknown:
        raise AwsError(
            f"Secret {name!r} has unknown key(s) {', '.join(map(repr, unknown))}; the keys are "
            f"{', '.join(keys.values())}."
        )
    return DeploySecrets(**{field: values.get(env, "") for field, env in keys.items()})
