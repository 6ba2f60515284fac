"""The IAM roles the cluster's pods get through EKS Pod Identity: the EBS and EFS CSI drivers', the AWS Load
Balancer Controller's, and the app's (no permission of its own: attach the policies it needs)."""

from deploy.aws.cfn.template import POD_IDENTITY_TRUST, managed, pod_identity, pod_role
from deploy.k8s import names

LOAD_BALANCER_CONTROLLER_ACTIONS = [
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
]


def add_roles(t):
    """Add the pods' roles; return the app role's output."""
    config, resources = t.config, t.resources
    for role, policy in (
        ("EbsCsiRole", "service-role/AmazonEBSCSIDriverPolicy"),
        ("EfsCsiRole", "service-role/AmazonEFSCSIDriverPolicy"),
    ):
        resources[role] = {
            "Type": "AWS::IAM::Role",
            "Properties": {"AssumeRolePolicyDocument": POD_IDENTITY_TRUST, "ManagedPolicyArns": [managed(policy)]},
        }
    resources["LoadBalancerControllerRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": POD_IDENTITY_TRUST,
            "ManagedPolicyArns": [managed("ElasticLoadBalancingFullAccess")],
            "Policies": [
                {
                    "PolicyName": "load-balancer-controller",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Resource": "*", "Action": LOAD_BALANCER_CONTROLLER_ACTIONS}],
                    },
                }
            ],
        },
    }
    resources["AppRole"] = pod_role(
        f"The app's pods ({config.namespace}/{config.app_name}); attach the policies it needs."
    )
    return {"AppRoleArn": {"Description": "DEPLOY['app_role_arn']", "Value": {"Fn::GetAtt": ["AppRole", "Arn"]}}}


def add_identities(t):
    """Give the load balancer controller's and the app's ServiceAccounts their roles (the CSI drivers' are given
    by their add-ons, deploy/aws/cfn/eks.py)."""
    config = t.config
    for logical, namespace, account, role in (
        ("LoadBalancerControllerIdentity", "kube-system", "aws-load-balancer-controller", "LoadBalancerControllerRole"),
        ("AppIdentity", config.namespace, names.resource_name(config.app_name), "AppRole"),
    ):
        t.resources[logical] = pod_identity(namespace, account, role)
