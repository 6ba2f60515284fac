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
        _add_subnet(t, i, "public", config.public_subnet_cidrs[i])
        _route(t, f"PublicSubnet{n}", "PublicRouteTable")
        _add_subnet(t, i, "private", config.private_subnet_cidrs[i])
        if n <= nat_count:
            _add_nat(t, n)
        _route(t, f"PrivateSubnet{n}", f"PrivateRouteTable{min(n, nat_count)}")
    return {
        "VpcId": {"Description": "The VPC", "Value": {"Ref": "Vpc"}},
        "VpcCidr": {"Description": "DEPLOY['vpc_cidr']", "Value": config.vpc_cidr},
    }


def _add_subnet(t, i, kind, cidr):
    """The ``kind`` ('public' or 'private') subnet of zone ``i``, tagged for the load balancers of its kind."""
    properties = {"VpcId": {"Ref": "Vpc"}, "CidrBlock": cidr, "AvailabilityZone": t.zone(i)}
    if kind == "public":
        properties["MapPublicIpOnLaunch"] = True
    role = "elb" if kind == "public" else "internal-elb"
    properties["Tags"] = t.tags(f"{kind}-{i + 1}", **{f"kubernetes.io/role/{role}": "1"})
    t.resources[f"{kind.capitalize()}Subnet{i + 1}"] = {"Type": "AWS::EC2::Subnet", "Properties": properties}


def _route(t, subnet, route_table):
    """Subnet ``subnet`` routes by ``route_table`` (logical ids)."""
    t.resources[f"{subnet}Routes"] = {
        "Type": "AWS::EC2::SubnetRouteTableAssociation",
        "Properties": {"SubnetId": {"Ref": subnet}, "RouteTableId": {"Ref": route_table}},
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
