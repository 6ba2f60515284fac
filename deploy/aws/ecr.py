"""ECR: the repository (scan on push, immutable tags, lifecycle), Docker login, build, push, digest."""

import base64
import json
import subprocess

from deploy.aws.session import AwsError, call, explain

LIFECYCLE = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "Expire untagged images after 14 days",
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                          "countNumber": 14},
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": "Keep the 100 most recent images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 100},
            "action": {"type": "expire"},
        },
    ]
}  # fmt: skip


def repository_name(image_repository):
    """'123.dkr.ecr.eu-west-1.amazonaws.com/shop/web' -> 'shop/web'."""
    return image_repository.split("/", 1)[1] if "/" in image_repository else image_repository


def ensure_repository(session, name):
    """Create the repository if needed; always (re)apply scan on push, immutable tags and the lifecycle policy."""
    ecr = session.client("ecr")
    try:
        found = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        created = False
    except ecr.exceptions.RepositoryNotFoundException:
        found = call(
            f"Creating ECR repository {name}",
            ecr.create_repository,
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
        )["repository"]
        created = True
    except Exception as exc:
        error = explain(exc, f"Reading ECR repository {name}")
        if error is None:
            raise
        raise error from None
    call(f"Setting tag immutability on {name}", ecr.put_image_tag_mutability, repositoryName=name,
         imageTagMutability="IMMUTABLE")  # fmt: skip
    call(f"Setting scan on push on {name}", ecr.put_image_scanning_configuration, repositoryName=name,
         imageScanningConfiguration={"scanOnPush": True})  # fmt: skip
    call(f"Setting the lifecycle policy of {name}", ecr.put_lifecycle_policy, repositoryName=name,
         lifecyclePolicyText=json.dumps(LIFECYCLE))  # fmt: skip
    return found["repositoryUri"], created


def docker_login(session, registry=None, docker="docker"):
    ecr = session.client("ecr")
    data = call("Getting an ECR login token", ecr.get_authorization_token)["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    registry = registry or data["proxyEndpoint"]
    result = subprocess.run(
        [docker, "login", "--username", user, "--password-stdin", registry],
        input=password, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise AwsError(f"docker login to {registry} failed: {result.stderr.strip()}")
    return registry


def build_and_push(image, context=".", build_args=None, docker="docker"):
    """docker build --network host, docker push; returns the pushed digest (sha256:…)."""
    args = [docker, "build", "--network", "host", "-t", image]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    for step, command in (("build", [*args, context]), ("push", [docker, "push", image])):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise AwsError(f"docker {step} of {image} failed: {result.stderr.strip()[-500:]}")
    inspect = subprocess.run(
        [docker, "image", "inspect", "--format", "{{json .RepoDigests}}", image], capture_output=True, text=True
    )
    repository = image.rsplit(":", 1)[0]
    for reference in json.loads(inspect.stdout or "[]"):
        name, _, digest = reference.partition("@")
        if name == repository and digest.startswith("sha256:"):
            return digest
    raise AwsError(f"docker pushed {image} but reported no digest for {repository}.")
