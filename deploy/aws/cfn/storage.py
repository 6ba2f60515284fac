"""The EFS file system of the static files, encrypted, with a mount target in each private subnet behind a
security group that admits NFS from the VPC only."""


def add_storage(t):
    """Add the file system, its mount targets and their security group; return the file system's output."""
    config, resources = t.config, t.resources
    resources["StaticFilesSecurityGroup"] = {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": f"NFS to the static files of {config.app_name}",
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
            "Tags": t.tags("efs"),
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
            "FileSystemTags": [{"Key": "Name", "Value": f"{config.app_name}-static"}],
        },
    }
    for i, subnet in enumerate(t.private_subnets):
        resources[f"StaticFilesMount{i + 1}"] = {
            "Type": "AWS::EFS::MountTarget",
            "Properties": {
                "FileSystemId": {"Ref": "StaticFiles"},
                "SubnetId": subnet,
                "SecurityGroups": [{"Ref": "StaticFilesSecurityGroup"}],
            },
        }
    return {"EfsFileSystemId": {"Description": "DEPLOY['efs_file_system_id']", "Value": {"Ref": "StaticFiles"}}}
