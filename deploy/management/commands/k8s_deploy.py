"""Render, validate and deploy the Kubernetes manifests of this project.

With no cluster configured, the manifests are rendered, validated and
written to ``build/k8s/``; nothing is applied and the command exits 0.
"""

import json

from django.core.management.base import BaseCommand, CommandError

from deploy.conf import SUPPORTED_KUBERNETES_VERSIONS, ConfigError, get_config, get_secrets
from deploy.k8s.cluster import find_cluster
from deploy.k8s.render import RenderError, render_manifests, to_yaml, write_manifests
from deploy.k8s.validate import describe, validate_manifests

DEFAULT_OUTPUT = "build/k8s"


class Command(BaseCommand):
    help = (
        "Render the Kubernetes manifests from settings.DEPLOY and the environment, validate them, "
        "and apply them to the cluster. With no cluster configured, write them to build/k8s/ and apply nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--render", action="store_true", help="Print the manifests as one multi-document YAML and stop."
        )
        parser.add_argument(
            "--output",
            metavar="DIR",
            help="Write one file per object and a kustomization.yaml to DIR (default with no cluster: build/k8s).",
        )
        parser.add_argument(
            "--include-secrets",
            action="store_true",
            help="Put the real Secret values in --render and --output (redacted otherwise).",
        )
        parser.add_argument("--json", action="store_true", help="Print a machine-readable report instead of sentences.")

    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        try:
            config = get_config()
        except ConfigError as exc:
            raise CommandError(f"Invalid deploy configuration: {exc}") from None
        secrets = get_secrets()
        redact = not options["include_secrets"]
        try:
            manifests = render_manifests(config, secrets, redact=redact)
        except RenderError as exc:
            raise CommandError(f"Cannot render the manifests: {exc}") from None
        self._validate(manifests, config)

        if options["render"]:
            self.stdout.write(to_yaml(manifests), ending="")
            return

        report = {
            "objects": [describe(m) for m in manifests],
            "validated_for": list(SUPPORTED_KUBERNETES_VERSIONS),
            "secrets_redacted": redact,
            "applied": False,
        }
        cluster = find_cluster()
        output = options["output"] or (None if cluster else DEFAULT_OUTPUT)
        if output:
            self._write(manifests, output)
            report["output"] = output
        if cluster is None:
            report["cluster"] = None
            self._report(
                report,
                options,
                f"No cluster configured (no KUBECONFIG, no ~/.kube/config, not in a pod, no EKS cluster named): "
                f"nothing was applied. {len(manifests)} manifests validated for Kubernetes "
                f"{', '.join(SUPPORTED_KUBERNETES_VERSIONS)} and written to {output}/.",
            )
            return
        raise CommandError(
            f"A cluster is configured ({cluster}), but this version of k8s_deploy only renders and validates: "
            "applying to a cluster is not available yet. Use --render or --output and apply with "
            "'kubectl apply --server-side -k DIR'."
        )

    def _validate(self, manifests, config):
        problems = validate_manifests(manifests, config)
        if problems:
            shown = "\n".join(f"  - {p}" for p in problems[:50])
            more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise CommandError(
                f"The rendered manifests are not valid ({len(problems)} problem(s)); nothing was written or "
                f"applied:\n{shown}{more}"
            )

    def _write(self, manifests, output):
        try:
            write_manifests(manifests, output)
        except RenderError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"Cannot write the manifests to {output}: {exc.strerror}.") from None

    def _report(self, report, options, sentence):
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        elif self.verbosity >= 1:
            self.stdout.write(sentence)
            if self.verbosity >= 2:
                for line in report["objects"]:
                    self.stdout.write(f"  {line}")
