"""The secret values: read from the environment (or a Secrets Manager secret) at render time, never printed."""

import os
from dataclasses import dataclass, field

# Each secret value: its DeploySecrets field -> its environment variable, which is also its key in the
# secrets_name secret. The one list of them: the docs and the messages are made from it.
SECRET_ENV = {
    "secret_key": "DEPLOY_SECRET_KEY",
    "postgres_password": "DEPLOY_POSTGRES_PASSWORD",
    "redis_password": "DEPLOY_REDIS_PASSWORD",
    "postgres_superuser_password": "DEPLOY_POSTGRES_SUPERUSER_PASSWORD",
    "alert_smtp_password": "DEPLOY_ALERT_SMTP_PASSWORD",
    "alert_webhook_url": "DEPLOY_ALERT_WEBHOOK_URL",
    "alert_watchdog_url": "DEPLOY_ALERT_WATCHDOG_URL",
}
SECRET_MEANINGS = {
    "secret_key": "Django's SECRET_KEY (at least 40 characters).",
    "postgres_password": "The app's PostgreSQL user's password.",
    "redis_password": "Redis's password (the in-cluster Redis, or the external one's AUTH).",
    "postgres_superuser_password": "The in-cluster PostgreSQL's superuser ('postgres'), used by its init only; "
    "must differ from the app's.",
    "alert_smtp_password": "The SMTP password of alert e-mails (with alert_smtp_username).",
    "alert_webhook_url": "The Slack or generic webhook URL of alerts (with alert_webhook).",
    "alert_watchdog_url": "The dead man's switch URL the always-firing Watchdog alert is posted to (with "
    "alert_watchdog).",
}


@dataclass(frozen=True)
class DeploySecrets:
    """Secret values, read from the environment at render time; never printed."""

    secret_key: str = field(default="", repr=False)
    postgres_password: str = field(default="", repr=False)
    redis_password: str = field(default="", repr=False)
    # The in-cluster PostgreSQL's superuser ("postgres"): only its init uses it; the app's user is not a superuser.
    postgres_superuser_password: str = field(default="", repr=False)
    alert_smtp_password: str = field(default="", repr=False)
    alert_webhook_url: str = field(default="", repr=False)
    alert_watchdog_url: str = field(default="", repr=False)

    ENV = SECRET_ENV

    def missing(self):
        return [self.ENV[name] for name in self.ENV if not getattr(self, name)]

    def values(self):
        return [getattr(self, name) for name in self.ENV if getattr(self, name)]


def get_secrets(environ=None):
    environ = os.environ if environ is None else environ
    return DeploySecrets(**{name: environ.get(env, "") for name, env in DeploySecrets.ENV.items()})
