"""What every part of the infrastructure stack builds with: the template being filled, tags, trust policies,
KMS keys and EKS Pod Identity associations."""

import json

POD_IDENTITY_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                   "Action": ["sts:AssumeRole", "sts:TagSession"]}],
}  # fmt: skip


class Template:
    """The resources of the stack being rendered, in the order they are added, and the settings they come from.

    ``zone_count`` is the number of availability zones (``check_settings``): one public and one private subnet
    in each.
    """

    def __init__(self, config, zone_count):
        self.config = config
        self.zone_count = zone_count
        self.resources = {}

    def zone(self, i):
        # Chosen zones are a parameter (its default), so the template itself names none.
        zones = {"Ref": "AvailabilityZones"} if self.config.aws_availability_zones else {"Fn::GetAZs": ""}
        return {"Fn::Select": [i, zones]}

    def tags(self, name, **extra):
        app = self.config.app_name
        return [{"Key": "Name", "Value": f"{app}-{name}"}, {"Key": "app.kubernetes.io/part-of", "Value": app}] + [
            {"Key": k, "Value": v} for k, v in extra.items()
        ]

    @property
    def private_subnets(self):
        return [{"Ref": f"PrivateSubnet{i + 1}"} for i in range(self.zone_count)]

    @property
    def public_subnets(self):
        return [{"Ref": f"PublicSubnet{i + 1}"} for i in range(self.zone_count)]


def trust(service):
    """The trust policy of a role an AWS service assumes."""
    statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    return {"Version": "2012-10-17", "Statement": [statement]}


def managed(name):
    """The ARN of the AWS managed policy ``name``, in the stack's partition."""
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::aws:policy/{name}"}


def kms_key(description):
    """A customer managed KMS key, rotated yearly, administered by the account, kept when the stack goes."""
    return {
        "Type": "AWS::KMS::Key",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": description,
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AccountAdministers",
                        "Effect": "Allow",
                        "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ],
            },
        },
    }


def tls_only_bucket_policy(bucket):
    """The policy of the stack's bucket ``bucket`` (logical id) that refuses every request not made over TLS."""
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": bucket},
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [{"Fn::GetAtt": [bucket, "Arn"]}, {"Fn::Sub": f"${{{bucket}.Arn}}/*"}],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]},
        },
    }  # fmt: skip


def pod_role(description, policy_name="", statements=()):
    """An IAM role for pods (EKS Pod Identity), with the inline policy ``policy_name`` of ``statements`` if any."""
    properties = {"AssumeRolePolicyDocument": POD_IDENTITY_TRUST, "Description": description}
    if statements:
        document = {"Version": "2012-10-17", "Statement": list(statements)}
        properties["Policies"] = [{"PolicyName": policy_name, "PolicyDocument": document}]
    return {"Type": "AWS::IAM::Role", "Properties": properties}


def pod_identity(namespace, service_account, role):
    """EKS Pod Identity: the pods of ``namespace``/``service_account`` get the stack's IAM role ``role``."""
    return {
        "Type": "AWS::EKS::PodIdentityAssociation",
        "Properties": {
            "ClusterName": {"Ref": "Cluster"},
            "Namespace": namespace,
            "ServiceAccount": service_account,
            "RoleArn": {"Fn::GetAtt": [role, "Arn"]},
        },
    }


def to_text(template):
    """The template as CloudFormation receives it and as build/cloudformation/STACK.json holds it."""
    return json.dumps(template, indent=2, sort_keys=False) + "\n"


def private_bucket(config, encryption, expiry, versioned=False):
    """An S3 bucket kept when the stack goes: nothing public, owned by the account, encrypted by the rule
    ``encryption``, its objects expired by the lifecycle rule ``expiry`` (and incomplete uploads after a day)."""
    properties = {"VersioningConfiguration": {"Status": "Enabled"}} if versioned else {}
    properties.update({
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [encryption]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LifecycleConfiguration": {"Rules": [{**expiry, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]},
        "Tags": [{"Key": "app.kubernetes.io/part-of", "Value": config.app_name}],
    })  # fmt: skip
    return {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
            "Properties": properties}  # fmt: skip
