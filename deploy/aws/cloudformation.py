"""The AWS infrastructure of the deploy, as one CloudFormation stack rendered from the same settings.

VPC with public and private subnets in each availability zone and NAT, the
EKS cluster (secrets encrypted with KMS) and a managed node group, its
add-ons (VPC CNI with network policy enforcement on, CoreDNS, kube-proxy, EBS
and EFS CSI drivers, Pod Identity agent, metrics-server), IAM roles given to
pods through EKS Pod Identity, the EFS file system with a mount target in
each private subnet, the ECR repository and, when DEPLOY['postgres_mode'] is
'rds', an RDS PostgreSQL instance (Multi-AZ, encrypted, in the private
subnets, reachable from the cluster's pods only, its master password kept by
RDS in Secrets Manager). Its outputs are the deploy settings: cluster name,
file system id, repository URI, and the database's address, port, CIDR and
master secret ARN, which k8s_deploy reads (deploy/aws/rds.py).
"""

import hashlib
import ipaddress
import json
import re
import time

import yaml

from deploy.aws import transfer
from deploy.aws.backups import PREFIX as BACKUP_PREFIX
from deploy.aws.ecr import LIFECYCLE
from deploy.aws.session import AwsError, call
from deploy.conf import check_aws_stack as check_settings
from deploy.k8s import external_secrets, names

TERMINAL = re.compile(r"_(COMPLETE|FAILED)$")
POD_IDENTITY_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                   "Action": ["sts:AssumeRole", "sts:TagSession"]}],
}  # fmt: skip
ADDONS = ["vpc-cni", "coredns", "kube-proxy", "aws-ebs-csi-driver", "aws-efs-csi-driver", "eks-pod-identity-agent",
          "metrics-server"]  # fmt: skip


def _trust(service):
    statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    return {"Version": "2012-10-17", "Statement": [statement]}


def _managed(name):
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::aws:policy/{name}"}


# --- the template ----------------------------------------------------------------


def render_template(config):
    count = check_settings(config)
    app = config.app_name
    cluster_name = infra_cluster_name(config)
    zones = config.aws_availability_zones
    resources, outputs = {}, {}

    def az(i):
        # Chosen zones are a parameter (its default), so the template itself names none.
        return {"Fn::Select": [i, {"Ref": "AvailabilityZones"} if zones else {"Fn::GetAZs": ""}]}

    def tags(name, **extra):
        return [{"Key": "Name", "Value": f"{app}-{name}"}, {"Key": "app.kubernetes.io/part-of", "Value": app}] + [
            {"Key": k, "Value": v} for k, v in extra.items()
        ]

    resources["Vpc"] = {
        "Type": "AWS::EC2::VPC",
        "Properties": {
            "CidrBlock": config.vpc_cidr,
            "EnableDnsHostnames": True,
            "EnableDnsSupport": True,
            "Tags": tags("vpc"),
        },
    }
    resources["InternetGateway"] = {"Type": "AWS::EC2::InternetGateway", "Properties": {"Tags": tags("igw")}}
    resources["GatewayAttachment"] = {
        "Type": "AWS::EC2::VPCGatewayAttachment",
        "Properties": {"VpcId": {"Ref": "Vpc"}, "InternetGatewayId": {"Ref": "InternetGateway"}},
    }
    resources["PublicRouteTable"] = {
        "Type": "AWS::EC2::RouteTable",
        "Properties": {"VpcId": {"Ref": "Vpc"}, "Tags": tags("public")},
    }
    resources["PublicRoute"] = {"Type": "AWS::EC2::Route", "DependsOn": "GatewayAttachment", "Properties": {
        "RouteTableId": {"Ref": "PublicRouteTable"}, "DestinationCidrBlock": "0.0.0.0/0",
        "GatewayId": {"Ref": "InternetGateway"}}}  # fmt: skip
    nat_count = count if config.nat_gateways == "per-az" else 1
    for i in range(count):
        n = i + 1
        resources[f"PublicSubnet{n}"] = {
            "Type": "AWS::EC2::Subnet",
            "Properties": {
                "VpcId": {"Ref": "Vpc"},
                "CidrBlock": config.public_subnet_cidrs[i],
                "AvailabilityZone": az(i),
                "MapPublicIpOnLaunch": True,
                "Tags": tags(f"public-{n}", **{"kubernetes.io/role/elb": "1"}),
            },
        }
        resources[f"PublicSubnet{n}Routes"] = {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Properties": {"SubnetId": {"Ref": f"PublicSubnet{n}"}, "RouteTableId": {"Ref": "PublicRouteTable"}},
        }
        resources[f"PrivateSubnet{n}"] = {
            "Type": "AWS::EC2::Subnet",
            "Properties": {
                "VpcId": {"Ref": "Vpc"},
                "CidrBlock": config.private_subnet_cidrs[i],
                "AvailabilityZone": az(i),
                "Tags": tags(f"private-{n}", **{"kubernetes.io/role/internal-elb": "1"}),
            },
        }
        nat = min(n, nat_count)
        if n <= nat_count:
            resources[f"NatAddress{n}"] = {
                "Type": "AWS::EC2::EIP",
                "DependsOn": "GatewayAttachment",
                "Properties": {"Domain": "vpc", "Tags": tags(f"nat-{n}")},
            }
            resources[f"NatGateway{n}"] = {
                "Type": "AWS::EC2::NatGateway",
                "Properties": {
                    "AllocationId": {"Fn::GetAtt": [f"NatAddress{n}", "AllocationId"]},
                    "SubnetId": {"Ref": f"PublicSubnet{n}"},
                    "Tags": tags(f"nat-{n}"),
                },
            }
            resources[f"PrivateRouteTable{n}"] = {
                "Type": "AWS::EC2::RouteTable",
                "Properties": {"VpcId": {"Ref": "Vpc"}, "Tags": tags(f"private-{n}")},
            }
            resources[f"PrivateRoute{n}"] = {
                "Type": "AWS::EC2::Route",
                "Properties": {
                    "RouteTableId": {"Ref": f"PrivateRouteTable{n}"},
                    "DestinationCidrBlock": "0.0.0.0/0",
                    "NatGatewayId": {"Ref": f"NatGateway{n}"},
                },
            }
        resources[f"PrivateSubnet{n}Routes"] = {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Properties": {
                "SubnetId": {"Ref": f"PrivateSubnet{n}"},
                "RouteTableId": {"Ref": f"PrivateRouteTable{nat}"},
            },
        }
    private = [{"Ref": f"PrivateSubnet{i + 1}"} for i in range(count)]
    public = [{"Ref": f"PublicSubnet{i + 1}"} for i in range(count)]

    resources["SecretsKey"] = {
        "Type": "AWS::KMS::Key",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": f"Envelope encryption of {cluster_name}'s Secrets",
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
    resources["ClusterRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": _trust("eks.amazonaws.com"),
            "ManagedPolicyArns": [_managed("AmazonEKSClusterPolicy")],
        },
    }
    resources["NodeRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": _trust("ec2.amazonaws.com"),
            "ManagedPolicyArns": [
                _managed("AmazonEKSWorkerNodePolicy"),
                _managed("AmazonEC2ContainerRegistryReadOnly"),
                _managed("AmazonEKS_CNI_Policy"),
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
                "SubnetIds": private + public,
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
            "Subnets": private,
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
    for role, policy in (
        ("EbsCsiRole", "service-role/AmazonEBSCSIDriverPolicy"),
        ("EfsCsiRole", "service-role/AmazonEFSCSIDriverPolicy"),
    ):
        resources[role] = {
            "Type": "AWS::IAM::Role",
            "Properties": {"AssumeRolePolicyDocument": POD_IDENTITY_TRUST, "ManagedPolicyArns": [_managed(policy)]},
        }
    resources["LoadBalancerControllerRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": POD_IDENTITY_TRUST,
            "ManagedPolicyArns": [_managed("ElasticLoadBalancingFullAccess")],
            "Policies": [
                {
                    "PolicyName": "load-balancer-controller",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Resource": "*",
                                "Action": [
                                    "ec2:Describe*",
                                    "ec2:CreateSecurityGroup",
                                    "ec2:CreateTags",
                                    "ec2:DeleteTags",
                                    "ec2:AuthorizeSecurityGroupIngress",
                                    "ec2:RevokeSecurityGroupIngress",
                                    "ec2:DeleteSecurityGroup",
                                    "acm:DescribeCertificate",
                                    "acm:ListCertificates",
                                    "wafv2:GetWebACLForResource",
                                    "shield:GetSubscriptionState",
                                    "iam:CreateServiceLinkedRole",
                                    "cognito-idp:DescribeUserPoolClient",
                                ],
                            }
                        ],
                    },
                }
            ],
        },
    }
    resources["AppRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": POD_IDENTITY_TRUST,
            "Description": f"The app's pods ({config.namespace}/{app}); attach the policies it needs.",
        },
    }
    for addon in ADDONS:
        properties = {"ClusterName": {"Ref": "Cluster"}, "AddonName": addon, "ResolveConflicts": "OVERWRITE"}
        if addon == "vpc-cni":
            # Without this, NetworkPolicies are accepted and not enforced.
            properties["ConfigurationValues"] = json.dumps({"enableNetworkPolicy": "true"})
        if addon in ("aws-ebs-csi-driver", "aws-efs-csi-driver"):
            role = "EbsCsiRole" if "ebs" in addon else "EfsCsiRole"
            account = "ebs-csi-controller-sa" if "ebs" in addon else "efs-csi-controller-sa"
            properties["PodIdentityAssociations"] = [
                {"ServiceAccount": account, "RoleArn": {"Fn::GetAtt": [role, "Arn"]}}
            ]
        logical = "Addon" + "".join(part.capitalize() for part in re.split(r"[-]", addon))
        resources[logical] = {
            "Type": "AWS::EKS::Addon",
            "DependsOn": ["NodeGroup", "AddonEksPodIdentityAgent"]
            if addon != "eks-pod-identity-agent"
            else ["NodeGroup"],
            "Properties": properties,
        }
    for logical, namespace, account, role in (
        ("LoadBalancerControllerIdentity", "kube-system", "aws-load-balancer-controller", "LoadBalancerControllerRole"),
        ("AppIdentity", config.namespace, names.resource_name(app), "AppRole"),
    ):
        resources[logical] = _pod_identity(namespace, account, role)
    _app_secrets(config, resources, outputs)
    if config.postgres_in_cluster:
        _backups(config, resources, outputs)
    resources["StaticFilesSecurityGroup"] = {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": f"NFS to the static files of {app}",
            "VpcId": {"Ref": "Vpc"},
            "SecurityGroupIngress": [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 2049,
                    "ToPort": 2049,
                    "CidrIp": config.vpc_cidr,
                    "Description": "NFS from the VPC",
                }
            ],
            "Tags": tags("efs"),
        },
    }
    resources["StaticFiles"] = {
        "Type": "AWS::EFS::FileSystem",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Encrypted": True,
            "PerformanceMode": "generalPurpose",
            "ThroughputMode": "elastic",
            "FileSystemTags": [{"Key": "Name", "Value": f"{app}-static"}],
        },
    }
    for i in range(count):
        resources[f"StaticFilesMount{i + 1}"] = {
            "Type": "AWS::EFS::MountTarget",
            "Properties": {
                "FileSystemId": {"Ref": "StaticFiles"},
                "SubnetId": {"Ref": f"PrivateSubnet{i + 1}"},
                "SecurityGroups": [{"Ref": "StaticFilesSecurityGroup"}],
            },
        }
    if config.postgres_mode == "rds":
        database_resources, database_outputs = _database(config, private, tags)
        resources.update(database_resources)
    owns_repository = repository_owner(config)
    repository = {"Type": "AWS::ECR::Repository", "DeletionPolicy": "Retain",
                               "UpdateReplacePolicy": "Retain", "Properties": {
        "RepositoryName": _repository(config), "ImageTagMutability": "IMMUTABLE",
        "ImageScanningConfiguration": {"ScanOnPush": True}, "EncryptionConfiguration": {"EncryptionType": "AES256"},
        "LifecyclePolicy": {"LifecyclePolicyText": json.dumps(LIFECYCLE)}}}  # fmt: skip
    if owns_repository:
        resources["Repository"] = repository
    outputs.update({
        "ClusterName": {"Description": "DEPLOY['eks_cluster']", "Value": {"Ref": "Cluster"}},
        "EfsFileSystemId": {"Description": "DEPLOY['efs_file_system_id']", "Value": {"Ref": "StaticFiles"}},
        "AppRoleArn": {"Description": "DEPLOY['app_role_arn']", "Value": {"Fn::GetAtt": ["AppRole", "Arn"]}},
        "VpcId": {"Description": "The VPC", "Value": {"Ref": "Vpc"}},
        "VpcCidr": {"Description": "DEPLOY['vpc_cidr']", "Value": config.vpc_cidr},
    })  # fmt: skip
    if config.postgres_mode == "rds":
        outputs.update(database_outputs)
    if owns_repository:
        outputs["RepositoryUri"] = {
            "Description": "DEPLOY['image_repository']",
            "Value": {"Fn::GetAtt": ["Repository", "RepositoryUri"]},
        }
    _cutover(config, resources, outputs)
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Infrastructure of {app}: VPC, EKS, EFS, ECR (rendered by manage.py aws_provision)",
    }
    if zones:
        template["Parameters"] = {
            "AvailabilityZones": {
                "Type": "List<AWS::EC2::AvailabilityZone::Name>",
                "Default": ",".join(zones),
                "Description": "DEPLOY['aws_availability_zones']",
            }
        }
    return {**template, "Resources": resources, "Outputs": outputs}


DATABASE_PORT = 5432


def database_cidr(config):
    """The smallest network holding every private subnet: RDS places the instance (and, after a Multi-AZ failover,
    its standby) in any of them, and the app's egress NetworkPolicy takes one CIDR. The security group, not this
    CIDR, is what admits the cluster's pods only."""
    subnets = [ipaddress.ip_network(cidr) for cidr in config.private_subnet_cidrs]
    network = subnets[0]
    while not all(subnet.subnet_of(network) for subnet in subnets):
        network = network.supernet()
    return str(network)


def _database(config, private, tags):
    """The RDS PostgreSQL instance of postgres_mode 'rds' and the resources it needs; its outputs."""
    app = config.app_name
    major = config.rds_engine_version.split(".")[0]
    resources = {
        "DatabaseKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": f"Encryption of {app}'s RDS storage, snapshots and master secret",
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
        },
        "DatabaseSubnets": {
            "Type": "AWS::RDS::DBSubnetGroup",
            "Properties": {
                "DBSubnetGroupDescription": f"Private subnets of {app}'s database",
                "SubnetIds": private,
                "Tags": tags("database"),
            },
        },
        "DatabaseSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": f"PostgreSQL of {app} from the cluster pods only",
                "VpcId": {"Ref": "Vpc"},
                "Tags": tags("database"),
            },
        },
        # Pods on the managed node group's nodes carry the cluster security group EKS creates (the VPC CNI gives
        # them the node's primary interface's groups): admitting that group admits the pods and nothing else.
        "DatabaseIngressFromCluster": {
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "GroupId": {"Ref": "DatabaseSecurityGroup"},
                "IpProtocol": "tcp",
                "FromPort": DATABASE_PORT,
                "ToPort": DATABASE_PORT,
                "SourceSecurityGroupId": {"Fn::GetAtt": ["Cluster", "ClusterSecurityGroupId"]},
                "Description": "PostgreSQL from the EKS cluster's pods",
            },
        },
        "DatabaseParameters": {
            "Type": "AWS::RDS::DBParameterGroup",
            "Properties": {
                "Description": f"{app}: connections must use TLS",
                "Family": f"postgres{major}",
                "Parameters": {"rds.force_ssl": "1"},
                "Tags": tags("database"),
            },
        },
        "Database": {
            "Type": "AWS::RDS::DBInstance",
            # Deleting or replacing the stack's database leaves a final snapshot; deletion protection refuses
            # the deletion itself until someone turns it off on purpose.
            "DeletionPolicy": "Snapshot",
            "UpdateReplacePolicy": "Snapshot",
            "Properties": {
                "Engine": "postgres",
                "EngineVersion": config.rds_engine_version,
                "DBInstanceClass": config.rds_instance_class,
                "AllocatedStorage": str(config.rds_storage_size),
                "StorageType": "gp3",
                "StorageEncrypted": True,
                "KmsKeyId": {"Ref": "DatabaseKey"},
                "MultiAZ": config.rds_multi_az,
                "DBSubnetGroupName": {"Ref": "DatabaseSubnets"},
                "VPCSecurityGroups": [{"Ref": "DatabaseSecurityGroup"}],
                "DBParameterGroupName": {"Ref": "DatabaseParameters"},
                "Port": str(DATABASE_PORT),
                "PubliclyAccessible": False,
                "MasterUsername": "postgres",
                "ManageMasterUserPassword": True,
                "MasterUserSecret": {"KmsKeyId": {"Ref": "DatabaseKey"}},
                "BackupRetentionPeriod": config.rds_backup_retention_days,
                "DeletionProtection": True,
                "CopyTagsToSnapshot": True,
                "AutoMinorVersionUpgrade": True,
                "EnableCloudwatchLogsExports": ["postgresql"],
                "Tags": tags("database"),
            },
        },
    }
    outputs = {
        "DatabaseAddress": {
            "Description": "Host of the RDS instance (k8s_deploy reads it: DEPLOY['postgres_host'])",
            "Value": {"Fn::GetAtt": ["Database", "Endpoint.Address"]},
        },
        "DatabasePort": {
            "Description": "Port of the RDS instance (DEPLOY['postgres_port'])",
            "Value": {"Fn::GetAtt": ["Database", "Endpoint.Port"]},
        },
        "DatabaseCidr": {
            "Description": "The private subnets the instance may be in (DEPLOY['postgres_cidr'])",
            "Value": database_cidr(config),
        },
        "DatabaseMasterSecretArn": {
            "Description": "Secrets Manager secret of the master user (the secret's ARN, not its value)",
            "Value": {"Fn::GetAtt": ["Database", "MasterUserSecret.SecretArn"]},
        },
    }
    return resources, outputs


def _logical(key):
    return "".join(part.capitalize() for part in key.split("_"))


def _app_secrets(config, resources, outputs):
    """The app's secrets in AWS Secrets Manager (docs/security.md#secrets-from-aws-secrets-manager).

    Generated by Secrets Manager (letters and digits: they sit unquoted in URLs and redis.conf), encrypted
    with a key of their own. Only ``SecretsReaderRole`` may read them and use the key (through Secrets Manager),
    and only the External Secrets Operator's pod identity (``ExternalSecretsRole``) may assume it.
    """
    resources["AppSecretsKey"] = {
        "Type": "AWS::KMS::Key",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": f"Encryption of {names.scoped(config)}'s secrets in AWS Secrets Manager",
            "EnableKeyRotation": True,
            "KeyPolicy": {"Version": "2012-10-17", "Statement": [{
                "Sid": "AccountAdministers", "Effect": "Allow",
                "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
                "Action": "kms:*", "Resource": "*"}]},
        },
    }  # fmt: skip
    secrets = names.aws_secrets(config)
    for key, name in secrets.items():
        resources[f"AppSecret{_logical(key)}"] = {
            "Type": "AWS::SecretsManager::Secret",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Name": name,
                "Description": f"{key} of {names.scoped(config)} (generated by aws_provision)",
                "KmsKeyId": {"Ref": "AppSecretsKey"},
                "GenerateSecretString": {"PasswordLength": 50 if key == "secret_key" else 32,
                                         "ExcludePunctuation": True},
            },
        }  # fmt: skip
    resources["ExternalSecretsRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": POD_IDENTITY_TRUST,
            "Description": f"The External Secrets Operator's pod identity: may only assume {names.scoped(config)}'s "
            "secrets reader",
        },
    }
    resources["SecretsReaderRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": f"Reads {names.scoped(config)}'s secrets; assumed by the External Secrets Operator only",
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": {"Fn::GetAtt": ["ExternalSecretsRole", "Arn"]}},
                "Action": ["sts:AssumeRole", "sts:TagSession"]}]},
            "Policies": [{"PolicyName": "read-app-secrets", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                 "Resource": [{"Ref": f"AppSecret{_logical(key)}"} for key in secrets]},
                {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Fn::GetAtt": ["AppSecretsKey", "Arn"]},
                 "Condition": {"StringEquals": {
                     "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}},
            ]}}],
        },
    }  # fmt: skip
    resources["ExternalSecretsAssumesReader"] = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "assume-secrets-reader",
            "Roles": [{"Ref": "ExternalSecretsRole"}],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Resource": {"Fn::GetAtt": ["SecretsReaderRole", "Arn"]}}]},
        },
    }  # fmt: skip
    resources["ExternalSecretsIdentity"] = _pod_identity(
        external_secrets.OPERATOR_NAMESPACE, external_secrets.OPERATOR_SERVICE_ACCOUNT, "ExternalSecretsRole"
    )
    outputs["SecretsReaderRoleArn"] = {
        "Description": "DEPLOY['secrets_reader_role_arn']",
        "Value": {"Fn::GetAtt": ["SecretsReaderRole", "Arn"]},
    }


def _backups(config, resources, outputs):
    """The S3 bucket of the PostgreSQL backups, and the role only the backup CronJob's pods get.

    Versioned, encrypted with a key of its own, public access blocked, TLS only, and a lifecycle that expires
    backups after DEPLOY['postgres_backup_bucket_keep_days'] (and replaced versions 7 days later).
    """
    resources["BackupKey"] = {
        "Type": "AWS::KMS::Key",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": f"Encryption of {names.scoped(config)}'s PostgreSQL backups in S3",
            "EnableKeyRotation": True,
            "KeyPolicy": {"Version": "2012-10-17", "Statement": [{
                "Sid": "AccountAdministers", "Effect": "Allow",
                "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
                "Action": "kms:*", "Resource": "*"}]},
        },
    }  # fmt: skip
    resources["BackupBucket"] = {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                  "KMSMasterKeyID": {"Fn::GetAtt": ["BackupKey", "Arn"]}},
                "BucketKeyEnabled": True}]},
            "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                               "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {"Rules": [{
                "Id": "expire-backups", "Status": "Enabled", "Prefix": BACKUP_PREFIX,
                "ExpirationInDays": config.postgres_backup_bucket_keep_days,
                "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]},
            "Tags": [{"Key": "app.kubernetes.io/part-of", "Value": config.app_name}],
        },
    }  # fmt: skip
    bucket = {"Fn::GetAtt": ["BackupBucket", "Arn"]}
    objects = {"Fn::Sub": "${BackupBucket.Arn}/" + BACKUP_PREFIX + "*"}
    resources["BackupBucketPolicy"] = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": "BackupBucket"},
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [bucket, {"Fn::Sub": "${BackupBucket.Arn}/*"}],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]},
        },
    }  # fmt: skip
    resources["BackupRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": POD_IDENTITY_TRUST,
            "Description": f"The PostgreSQL backup and restore pods of {names.scoped(config)}: its backup bucket only",
            "Policies": [{"PolicyName": "postgres-backups", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload",
                                               "s3:GetObject", "s3:GetObjectTagging"], "Resource": objects},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket,
                 "Condition": {"StringLike": {"s3:prefix": BACKUP_PREFIX + "*"}}},
                {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                 "Resource": {"Fn::GetAtt": ["BackupKey", "Arn"]}},
            ]}}],
        },
    }  # fmt: skip
    resources["BackupIdentity"] = _pod_identity(
        config.namespace, names.resource_name(config.app_name, "postgres-backup"), "BackupRole"
    )
    outputs["BackupBucketName"] = {"Description": "DEPLOY['postgres_backup_bucket']", "Value": {"Ref": "BackupBucket"}}


def _pod_identity(namespace, service_account, role):
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


def _cutover(config, resources, outputs):
    """The bucket that carries the SQLite file into the cluster (``k8s_deploy --cutover``), and the one role that
    may read it: the cut-over Job's own ServiceAccount's (EKS Pod Identity), never the app's pods'.

    A bucket of its own, not a prefix of the backups bucket: that one exists only with the in-cluster PostgreSQL
    (a cut-over to RDS needs the bucket too) and keeps versions for weeks, while this file (every row of the old
    site) should not outlive the cut-over: objects expire after 7 days. SSE-S3, not a KMS key: the operator's
    upload and the Job's read need no key permission, and the object is short-lived; TLS only, nothing public.
    Whoever runs the cut-over writes with their own credentials (s3:PutObject on ``cutover/*``).
    """
    objects = {"Fn::Sub": "${CutoverBucket.Arn}/" + transfer.PREFIX + "*"}
    resources["CutoverBucket"] = {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
            "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                               "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {"Rules": [{
                "Id": "expire-cutover-files", "Status": "Enabled", "Prefix": transfer.PREFIX,
                "ExpirationInDays": 7, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]},
            "Tags": [{"Key": "app.kubernetes.io/part-of", "Value": config.app_name}],
        },
    }  # fmt: skip
    resources["CutoverBucketPolicy"] = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": "CutoverBucket"},
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [{"Fn::GetAtt": ["CutoverBucket", "Arn"]}, {"Fn::Sub": "${CutoverBucket.Arn}/*"}],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]},
        },
    }  # fmt: skip
    resources["CutoverRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": POD_IDENTITY_TRUST,
            "Description": f"The cut-over Job of {config.namespace}/{config.app_name}: reads the SQLite file only",
            "Policies": [{"PolicyName": "read-cutover-file", "PolicyDocument": {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}]}}],
        },
    }  # fmt: skip
    resources["CutoverIdentity"] = _pod_identity(
        config.namespace, names.resource_name(config.app_name, "cutover"), "CutoverRole"
    )
    outputs["CutoverBucket"] = {"Description": "DEPLOY['cutover_bucket']", "Value": {"Ref": "CutoverBucket"}}


def _repository(config):
    return config.image_repository.split("/", 1)[1] if "/" in config.image_repository else config.image_repository


def to_text(template):
    return json.dumps(template, indent=2, sort_keys=False) + "\n"


# --- the stack -----------------------------------------------------------------------


def stack_name(config):
    return config.aws_stack_name or names.truncate(f"{names.scoped(config)}-infra")


def infra_cluster_name(config):
    """The EKS cluster the stack creates: APP-cluster, or APP-ENVIRONMENT-cluster for an environment."""
    return names.truncate(f"{names.scoped(config)}-cluster")


def repository_owner(config):
    """Whether this stack creates the ECR repository: one image, promoted by digest, lives in the first
    environment's stack (or the only stack); the other environments pull from it."""
    return not config.environment or config.environment == next(iter(config.environments), None)


def current_template(cloudformation, name):
    """The deployed template (dict) and stack status, or (None, None)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except cloudformation.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return None, None
        raise
    body = cloudformation.get_template(StackName=name, TemplateStage="Original")["TemplateBody"]
    if isinstance(body, str):
        body = yaml.safe_load(body)
    return body, stacks[0]["StackStatus"]


def plan_change_set(cloudformation, name, template, exists, role_arn=""):
    kind = "UPDATE" if exists else "CREATE"
    change_set_name = f"aws-provision-{int(time.time())}"
    created = call(
        f"Creating a change set for stack {name}",
        cloudformation.create_change_set,
        StackName=name,
        ChangeSetName=change_set_name,
        ChangeSetType=kind,
        TemplateBody=to_text(template),
        Capabilities=["CAPABILITY_NAMED_IAM", "CAPABILITY_IAM"],
        **({"RoleARN": role_arn} if role_arn else {}),
    )
    for _ in range(600):
        described = cloudformation.describe_change_set(ChangeSetName=created["Id"], StackName=name)
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            break
        time.sleep(1)
    if described["Status"] == "FAILED" and "didn't contain changes" not in described.get("StatusReason", ""):
        raise AwsError(f"The change set for {name} failed: {described.get('StatusReason')}")
    changes = [
        {
            "action": c["ResourceChange"]["Action"],
            "resource": c["ResourceChange"]["LogicalResourceId"],
            "type": c["ResourceChange"]["ResourceType"],
            "replacement": c["ResourceChange"].get("Replacement", ""),
        }
        for c in described.get("Changes", [])
    ]
    return created["Id"], changes


def stream_events(cloudformation, name, since, progress, timeout=3600):
    """Print stack events as they arrive; return the final status and the first failure (resource, reason)."""
    seen, deadline, failure = set(), time.monotonic() + timeout, None
    while True:
        events = call("Reading stack events", cloudformation.describe_stack_events, StackName=name)["StackEvents"]
        for event in reversed(events):
            if event["EventId"] in seen or event["Timestamp"].timestamp() < since:
                continue
            seen.add(event["EventId"])
            status, reason = event["ResourceStatus"], event.get("ResourceStatusReason", "")
            progress(f"{event['LogicalResourceId']:<32} {status:<24} {reason}")
            if status.endswith("_FAILED") and failure is None and "cancelled" not in reason.lower():
                failure = (event["LogicalResourceId"], event.get("ResourceType", ""), reason)
        stack = call("Reading the stack", cloudformation.describe_stacks, StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if TERMINAL.search(status) and not status.endswith("_IN_PROGRESS"):
            return status, failure, {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if time.monotonic() > deadline:
            raise AwsError(f"Stack {name} is still {status} after {timeout} s.")
        time.sleep(5)
