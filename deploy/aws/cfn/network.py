"""The VPC: a public and a private subnet in each availability zone, the internet gateway, and NAT (one gateway,
or one per zone with DEPLOY['nat_gateways'] 'per-az') for the private subnets' way out."""


def add_network(t):
    """Add the VPC and its subnets, routes and NAT gateways to ``t``; return the VPC's outputs."""
    config, resources, tags = t.config, t.resources, t.tags
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
    nat_count = t.zone_count if config.nat_gateways == "per-az" else 1
    for i in range(t.zone_count):
        n = i + 1
        resources[f"PublicSubnet{n}"] = {
            "Type": "AWS::EC2::Subnet",
            "Properties": {
                "VpcId": {"Ref": "Vpc"},
                "CidrBlock": config.public_subnet_cidrs[i],
                "AvailabilityZone": t.zone(i),
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
                "AvailabilityZone": t.zone(i),
                "Tags": tags(f"private-{n}", **{"kubernetes.io/role/internal-elb": "1"}),
            },
        }
        nat = min(n, nat_count)
        if n <= nat_count:
            _add_nat(t, n)
        resources[f"PrivateSubnet{n}Routes"] = {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Properties": {
                "SubnetId": {"Ref": f"PrivateSubnet{n}"},
                "RouteTableId": {"Ref": f"PrivateRouteTable{nat}"},
            },
        }
    return {
        "VpcId": {"Description": "The VPC", "Value": {"Ref": "Vpc"}},
        "VpcCidr": {"Description": "DEPLOY['vpc_cidr']", "Value": config.vpc_cidr},
    }


def _add_nat(t, n):
    """NAT gateway ``n`` in public subnet ``n``, and the route table of the private subnets that go out by it."""
    resources, tags = t.resources, t.tags
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
