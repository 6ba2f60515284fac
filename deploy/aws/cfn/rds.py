"""The RDS PostgreSQL instance of DEPLOY['postgres_mode'] 'rds': Multi-AZ, encrypted, in the private subnets,
reachable from the cluster's pods only, its master password kept by RDS in Secrets Manager. Its outputs are what
k8s_deploy reads to connect (deploy/aws/rds.py)."""

import ipaddress

from deploy.aws.cfn.template import kms_key

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


def add_database(t):
    """Add the instance and what it needs (key, subnet group, security group, parameter group); return its
    outputs."""
    config, tags = t.config, t.tags
    app = config.app_name
    major = config.rds_engine_version.split(".")[0]
    t.resources.update({
        "DatabaseKey": kms_key(f"Encryption of {app}'s RDS storage, snapshots and master secret"),
        "DatabaseSubnets": {
            "Type": "AWS::RDS::DBSubnetGroup",
            "Properties": {
                "DBSubnetGroupDescription": f"Private subnets of {app}'s database",
                "SubnetIds": t.private_subnets,
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
    })  # fmt: skip
    return {
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
