"""The ECR repository of the app's image: tags immutable, scanned on push, old images expired
(deploy/aws/ecr.py's lifecycle). One image, promoted by digest, lives in the first environment's stack."""

import json

from deploy.aws.ecr import LIFECYCLE, repository_name


def repository_owner(config):
    """Whether this stack creates the ECR repository: one image, promoted by digest, lives in the first
    environment's stack (or the only stack); the other environments pull from it."""
    return not config.environment or config.environment == next(iter(config.environments), None)


def add_registry(t):
    """Add the repository when this stack owns it; return its output (none otherwise)."""
    if not repository_owner(t.config):
        return {}
    t.resources["Repository"] = {"Type": "AWS::ECR::Repository", "DeletionPolicy": "Retain",
                                 "UpdateReplacePolicy": "Retain", "Properties": {
        "RepositoryName": repository_name(t.config.image_repository), "ImageTagMutability": "IMMUTABLE",
        "ImageScanningConfiguration": {"ScanOnPush": True}, "EncryptionConfiguration": {"EncryptionType": "AES256"},
        "LifecyclePolicy": {"LifecyclePolicyText": json.dumps(LIFECYCLE)}}}  # fmt: skip
    return {
        "RepositoryUri": {
            "Description": "DEPLOY['image_repository']",
            "Value": {"Fn::GetAtt": ["Repository", "RepositoryUri"]},
        }
    }
