"""The EKS cluster (Secrets encrypted with a KMS key of its own), staff access entries, the managed node group
and the add-ons: VPC CNI with network policy enforcement on, CoreDNS, kube-proxy, the EBS and EFS CSI drivers,
the Pod Identity agent and metrics-server."""

import hashlib
import json
import re

from deploy.aws.cfn.template import kms_key, managed, trust
from deploy.k8s import names

ADDONS = ["vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "aws-efs-csi-driver", "eks-pod-identity-agent",
          "metrics-server"]  # fmt: skip
# The add-ons whose controller needs AWS permissions: its ServiceAccount and the stack's role it gets
# (deploy/aws/cfn/identities.py).
ADDON_IDENTITIES = {
    "aws-ebs-csi-driver": ("ebs-csi-controller-sa", "EbsCsiRole"),
    "aws-efs-csi-driver": ("efs-csi-controller-sa", "EfsCsiRole"),
}


def infra_cluster_name(config):
    """The EKS cluster the stack creates: APP-cluster, or APP-ENVIRONMENT-cluster for an environment."""
    return names.truncate(f"{names.scoped(config)}-cluster")


def add_cluster(t):
    """Add the cluster, its roles and key, the staff access entries and the node group; return its output."""
    config, resources = t.config, t.resources
    cluster_name = infra_cluster_name(config)
    resources["SecretsKey"] = kms_key(f"Envelope encryption of {cluster_name}'s Secrets")
    resources["ClusterRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": trust("eks.amazonaws.com"),
            "ManagedPolicyArns": [managed("AmazonEKSClusterPolicy")],
        },
    }
    resources["NodeRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": trust("ec2.amazonaws.com"),
            "ManagedPolicyArns": [
                managed("AmazonEKSWorkerNodePolicy"),
                managed("AmazonEC2ContainerRegistryReadOnly"),
                managed("AmazonEKS_CNI_Policy"),
            ],
        },
    }
    resources["Cluster"] = {
        "Type": "AWS::EKS::Cluster",
        "Properties": {
            "Name": cluster_name,
            "Version": config.kubernetes_version,
            "RoleArn": {"Fn::GetAtt": ["ClusterRole", "Arn"]},
            "ResourcesVpcConfig": {
                "SubnetIds": t.private_subnets + t.public_subnets,
                "EndpointPublicAccess": True,
                "EndpointPrivateAccess": True,
            },
            "AccessConfig": {
                "AuthenticationMode": "API_AND_CONFIG_MAP",
                "BootstrapClusterCreatorAdminPermissions": True,
            },
            "EncryptionConfig": [
                {"Provider": {"KeyArn": {"Fn::GetAtt": ["SecretsKey", "Arn"]}}, "Resources": ["secrets"]}
            ],
            "Logging": {
                "ClusterLogging": {"EnabledTypes": [{"Type": "api"}, {"Type": "audit"}, {"Type": "authenticator"}]}
            },
        },
    }
    # Staff access (docs/security.md#staff-access-rbac): each IAM role or user joins the Kubernetes group that the
    # rendered RoleBindings bind to the read-only or operator role. No access policy: RBAC alone decides.
    groups = {"read-only": config.staff_read_only_group, "operator": config.staff_operator_group}
    for arn, role in sorted(config.staff_access.items()):
        logical = "StaffAccess" + hashlib.sha256(arn.encode()).hexdigest()[:10].upper()
        resources[logical] = {
            "Type": "AWS::EKS::AccessEntry",
            "Properties": {
                "ClusterName": {"Ref": "Cluster"},
                "PrincipalArn": arn,
                "Type": "STANDARD",
                "KubernetesGroups": [groups[role]],
            },
        }
    resources["NodeGroup"] = {
        "Type": "AWS::EKS::Nodegroup",
        "Properties": {
            "ClusterName": {"Ref": "Cluster"},
            "NodeRole": {"Fn::GetAtt": ["NodeRole", "Arn"]},
            "Subnets": t.private_subnets,
            "InstanceTypes": [config.node_instance_type],
            "AmiType": "AL2023_x86_64_STANDARD",
            "DiskSize": config.node_disk_size,
            "ScalingConfig": {
                "MinSize": config.node_count_min,
                "MaxSize": config.node_count_max,
                "DesiredSize": config.node_count_min,
            },
            "UpdateConfig": {"MaxUnavailable": 1},
        },
    }
    return {"ClusterName": {"Description": "DEPLOY['eks_cluster']", "Value": {"Ref": "Cluster"}}}


def add_addons(t):
    """Add the EKS add-ons, each after the node group (and the Pod Identity agent, which the others' roles need)."""
    for addon in ADDONS:
        properties = {"ClusterName": {"Ref": "Cluster"}, "AddonName": addon, "ResolveConflicts": "OVERWRITE"}
        if addon == "vpc-cni":
            # Without this, NetworkPolicies are accepted and not enforced.
            properties["ConfigurationValues"] = json.dumps({"enableNetworkPolicy": "true"})
        if addon in ADDON_IDENTITIES:
            account, role = ADDON_IDENTITIES[addon]
            properties["PodIdentityAssociations"] = [
                {"ServiceAccount": account, "RoleArn": {"Fn::GetAtt": [role, "Arn"]}}
            ]
        logical = "Addon" + "".join(part.capitalize() for part in re.split(r"[-]", addon))
        t.resources[logical] = {
            "Type": "AWS::EKS::Addon",
            "DependsOn": ["NodeGroup", "AddonEksPodIdentityAgent"]
            if addon != "eks-pod-identity-agent"
            else ["NodeGroup"],
            "Properties": properties,
        }
