"""The settings, in groups: each group a frozen dataclass, all composed into :class:`DeployConfig`.

Each setting is declared once, in its group: its type, default, meaning and check (the environment
variable is derived from its name, see :mod:`deploy.conf.fields`). ``DeployConfig`` inherits every
group, so its fields stay flat: templates and callers write ``config.postgres_mode``, not
``config.postgres.postgres_mode``. The order of the fields (and of the configuration reference) is
the order of the groups in this file.
"""

from dataclasses import dataclass

from deploy.conf import checks
from deploy.conf.fields import setting
from deploy.conf.secrets import SECRET_ENV

SUPPORTED_KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33", "1.34")


@dataclass(frozen=True)
class AppSettings:
    """The application: its name and namespace, image, pods, how it is exposed, its static files."""

    # --- identity ---
    app_name: str = setting(
        "django-app",
        "Name of the application: prefix of every object's name and value of app.kubernetes.io/name.",
        check=checks.dns_label,
    )
    namespace: str = setting(
        "django-app",
        "Namespace of the application and its data services (not default, kube-system, kube-public, kube-node-lease).",
        check=checks.dns_label,
    )
    kubernetes_version: str = setting(
        "1.33",
        "Kubernetes version of the target cluster (the manifests are validated against every supported version).",
        choices=SUPPORTED_KUBERNETES_VERSIONS,
    )
    # --- image ---
    image_repository: str = setting(
        "django-app", "Image repository of the app, for example an ECR repository URI.", check=checks.image_repository
    )
    image_tag: str = setting("0.1.0", "Image tag (a version or a commit; never 'latest').", check=checks.image_tag)
    image_digest: str = setting(
        "",
        "Image digest (sha256:…). When set, pods pull repository@digest, so a tag moved later changes nothing.",
        check=checks.digest,
    )
    # --- app workload ---
    replicas_min: int = setting(2, "Fewest app pods the autoscaler keeps.", check=checks.at_least_two)
    replicas_max: int = setting(6, "Most app pods the autoscaler starts.", check=checks.positive)
    cpu_target_percent: int = setting(
        70, "Average CPU use, in percent of the request, the autoscaler aims for.", check=checks.percent
    )
    memory_target_percent: int = setting(
        80, "Average memory use, in percent of the request, the autoscaler aims for.", check=checks.percent
    )
    cpu_request: str = setting("250m", "CPU request of an app pod.", check=checks.cpu)
    cpu_limit: str = setting("1", "CPU limit of an app pod.", check=checks.cpu)
    memory_request: str = setting("384Mi", "Memory request of an app pod.", check=checks.memory)
    memory_limit: str = setting("512Mi", "Memory limit of an app pod.", check=checks.memory)
    ephemeral_storage_request: str = setting(
        "256Mi", "Ephemeral storage request of an app pod (/tmp and metrics files).", check=checks.memory
    )
    ephemeral_storage_limit: str = setting("1Gi", "Ephemeral storage limit of an app pod.", check=checks.memory)
    web_concurrency: int = setting(2, "gunicorn worker processes per pod (WEB_CONCURRENCY).", check=checks.positive)
    gunicorn_threads: int = setting(2, "Threads per gunicorn worker.", check=checks.positive)
    termination_grace_seconds: int = setting(
        30, "Seconds a pod gets to finish its requests after SIGTERM.", check=checks.positive
    )
    log_level: str = setting("INFO", "LOG_LEVEL of the app.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    extra_env: dict = setting(
        {},
        "Extra non-secret environment variables of the app (a JSON object in the environment variable). "
        "Variables the stack sets itself (DEBUG, ALLOWED_HOSTS, DATABASE_URL, SECURE_SSL_REDIRECT, …) are refused.",
        check=checks.extra_env,
        hide_values=True,
    )
    # --- exposure ---
    hosts: list = setting(
        ["app.example.com"], "Host names the site answers to (ALLOWED_HOSTS, the Ingress rules).", check=checks.hosts
    )
    exposure: str = setting(
        "nlb",
        "'nlb': a LoadBalancer Service (a Network Load Balancer; with certificate_arn it ends TLS on 443 and sends "
        "to the pods' port 8443, and Django redirects HTTP; without one, plain HTTP only); 'alb': an Ingress (an "
        "Application Load Balancer that ends TLS, redirects HTTP and sends X-Forwarded-Proto).",
        choices=("nlb", "alb"),
    )
    load_balancer_scheme: str = setting(
        "internet-facing",
        "Whether the load balancer is reachable from the internet.",
        choices=("internet-facing", "internal"),
    )
    certificate_arn: str = setting(
        "",
        "ACM certificate for HTTPS; required with 'alb'. With 'nlb' and none, the site is served over plain HTTP "
        "(no redirect, cookies not Secure), and k8s_deploy warns when that faces the internet: set one for production.",
        check=checks.acm_arn,
    )
    vpc_cidr: str = setting(
        "10.0.0.0/16", "CIDR of the cluster's VPC: the load balancer reaches the pods from it.", check=checks.cidr
    )
    # --- storage ---
    create_storage_classes: bool = setting(False, "Create the 'efs-ap' and 'gp3' StorageClasses (cluster-scoped).")
    efs_file_system_id: str = setting(
        "", "EFS file system of the static files volume; required with create_storage_classes.", check=checks.efs_id
    )
    static_storage_class: str = setting(
        "efs-ap", "StorageClass of the ReadWriteMany static files volume.", check=checks.dns_label
    )
    static_volume_size: str = setting("1Gi", "Size requested for the static files volume.", check=checks.memory)

    @property
    def image(self):
        """The image reference pods pull: by digest when one is known."""
        if self.image_digest:
            return f"{self.image_repository}@{self.image_digest}"
        return f"{self.image_repository}:{self.image_tag}"


@dataclass(frozen=True)
class PostgresSettings:
    """PostgreSQL: the mode (in-cluster, CloudNativePG, external, RDS), its server and its backups."""

    # --- PostgreSQL ---
    postgres_mode: str = setting(
        "in-cluster",
        "'in-cluster': one PostgreSQL StatefulSet pod in the namespace (the small mode: no failover); "
        "'cloudnative-pg': a CloudNativePG Cluster of postgres_instances pods spread over zones, with automatic "
        "failover (the operator must be installed: docs/high-availability.md); 'external': a server elsewhere, "
        "named by postgres_host and postgres_cidr; 'rds': the RDS Multi-AZ instance aws_provision creates, which "
        "k8s_deploy finds in the stack's outputs (docs/high-availability.md#managed-postgresql-rds).",
        choices=("in-cluster", "cloudnative-pg", "external", "rds"),
    )
    postgres_instances: int = setting(
        3,
        "PostgreSQL instances of the CloudNativePG Cluster (cloudnative-pg mode): one primary, the others "
        "streaming replicas, one per zone where the nodes allow.",
        check=checks.positive,
    )
    postgres_replication: str = setting(
        "synchronous",
        "Replication of the CloudNativePG Cluster (cloudnative-pg mode): 'synchronous' (a commit waits for one "
        "replica, so a failover loses no acknowledged write; needs postgres_instances of 2 or more) or "
        "'asynchronous' (faster commits; a failover may lose the last writes).",
        choices=("synchronous", "asynchronous"),
    )
    postgres_cnpg_image: str = setting(
        "ghcr.io/cloudnative-pg/postgresql:16.4",
        "PostgreSQL image of the CloudNativePG Cluster (cloudnative-pg mode): one of the operator's operand images, "
        "of the same major version as postgres_image (whose pg_dump the backup CronJob runs; another major "
        "version is refused).",
        check=checks.image,
    )
    postgres_operator_namespace: str = setting(
        "cnpg-system",
        "Namespace of the CloudNativePG operator (cloudnative-pg mode): its pods may reach the instances' status "
        "port. Not the app's namespace, whose policies deny the operator's traffic.",
        check=checks.dns_label,
    )
    postgres_host: str = setting(
        "",
        "Host of the external PostgreSQL (external mode; in rds mode it comes from the stack).",
        check=checks.dns_name,
    )
    postgres_port: int = setting(
        5432, "Port of the external PostgreSQL (the in-cluster one listens on 5432).", check=checks.port
    )
    postgres_cidr: str = setting(
        "",
        "CIDR the external PostgreSQL is in; the egress policy allows it (external mode; in rds mode it comes "
        "from the stack).",
        check=checks.optional_cidr,
    )
    postgres_database: str = setting("app", "Database name.", check=checks.dns_label)
    postgres_user: str = setting("app", "Database user.", check=checks.dns_label)
    postgres_image: str = setting("postgres:16.4-bookworm", "Image of the in-cluster PostgreSQL.", check=checks.image)
    postgres_storage_class: str = setting(
        "gp3", "StorageClass of PostgreSQL's data and backup volumes (EBS gp3).", check=checks.dns_label
    )
    postgres_storage_size: str = setting("20Gi", "Size of PostgreSQL's data volume.", check=checks.memory)
    postgres_backup_schedule: str = setting(
        "0 3 * * *",
        "When the backup CronJob runs pg_dump (five cron fields, or @hourly, @daily, @weekly, @monthly, @yearly; UTC).",
        check=checks.cron,
    )
    postgres_backup_size: str = setting("20Gi", "Size of the backup volume.", check=checks.memory)
    postgres_backup_keep_days: int = setting(7, "Days a backup is kept on the backup volume.", check=checks.positive)
    postgres_backup_bucket: str = setting(
        "",
        "S3 bucket the backup CronJob streams its dumps to (the infrastructure stack's BackupBucketName output), "
        "through its EKS Pod Identity; empty: dumps go to the backup volume (docs/runbooks.md#restoring-a-backup). "
        "In the 'in-cluster' and 'cloudnative-pg' modes; in the cloudnative-pg mode the Cluster also archives its WAL "
        "and base backups there (Barman Cloud plugin), for a restore to a point in time (docs/high-availability.md).",
        check=checks.bucket_name,
    )
    postgres_backup_bucket_keep_days: int = setting(
        30,
        "Days a backup stays in the S3 bucket before its lifecycle rule expires it (aws_provision); a replaced or "
        "deleted version is kept 7 more days. In the cloudnative-pg mode also the recovery window of the WAL "
        "archive (its ObjectStore's retentionPolicy).",
        check=checks.positive,
    )

    @property
    def postgres_in_cluster(self):
        return self.postgres_mode == "in-cluster"

    @property
    def postgres_operator(self):
        """PostgreSQL is a CloudNativePG Cluster in the namespace (its pods and Services made by the operator)."""
        return self.postgres_mode == "cloudnative-pg"

    @property
    def postgres_outside_cluster(self):
        """PostgreSQL is a server outside the cluster, reached by host and CIDR: 'external', or 'rds' (its host from
        the infrastructure stack's outputs). 'in-cluster' and 'cloudnative-pg' run in the namespace."""
        return self.postgres_mode in ("external", "rds")


@dataclass(frozen=True)
class RedisSettings:
    """Redis, the app's cache: in the cluster or external."""

    # --- Redis ---
    redis_mode: str = setting(
        "in-cluster",
        "'in-cluster': a Redis Deployment in the namespace; 'external': a server elsewhere, such as ElastiCache.",
        choices=("in-cluster", "external"),
    )
    redis_host: str = setting("", "Host of the external Redis (external mode).", check=checks.dns_name)
    redis_port: int = setting(
        6379, "Port of the external Redis (the in-cluster one listens on 6379).", check=checks.port
    )
    redis_cidr: str = setting(
        "", "CIDR the external Redis is in; the egress policy allows it (external mode).", check=checks.optional_cidr
    )
    redis_tls: bool = setting(
        False, "Connect to Redis over TLS (rediss://), as ElastiCache with in-transit encryption requires."
    )
    redis_image: str = setting("redis:7.2.5-bookworm", "Image of the in-cluster Redis.", check=checks.image)
    redis_max_memory: str = setting(
        "256mb", "Redis maxmemory; keys are evicted LRU beyond it (cache only).", check=checks.redis_size
    )

    @property
    def redis_in_cluster(self):
        return self.redis_mode == "in-cluster"


@dataclass(frozen=True)
class PolicySettings:
    """What the cluster allows the stack: quotas, limits, priority."""

    # --- cluster policy ---
    quota_cpu_requests: str = setting("8", "ResourceQuota: total CPU requests in the namespace.", check=checks.cpu)
    quota_cpu_limits: str = setting("16", "ResourceQuota: total CPU limits in the namespace.", check=checks.cpu)
    quota_memory_requests: str = setting(
        "16Gi", "ResourceQuota: total memory requests in the namespace.", check=checks.memory
    )
    quota_memory_limits: str = setting(
        "32Gi", "ResourceQuota: total memory limits in the namespace.", check=checks.memory
    )
    quota_storage: str = setting(
        "200Gi", "ResourceQuota: total storage requested by volume claims.", check=checks.memory
    )
    quota_pods: int = setting(40, "ResourceQuota: most pods in the namespace.", check=checks.positive)
    container_max_cpu: str = setting("4", "LimitRange: largest CPU limit of one container.", check=checks.cpu)
    container_max_memory: str = setting(
        "8Gi", "LimitRange: largest memory limit of one container.", check=checks.memory
    )
    logging_quota: dict = setting(
        {"requests.cpu": "4", "limits.cpu": "12", "requests.memory": "12Gi", "limits.memory": "12Gi",
         "requests.storage": "160Gi", "pods": 20},
        "ResourceQuota of the logging namespace (keys: requests.cpu, limits.cpu, requests.memory, limits.memory, "
        "requests.storage, pods). Its LimitRange uses container_max_cpu and container_max_memory.",
        check=checks.quota, env=None,
    )  # fmt: skip
    monitoring_quota: dict = setting(
        {"requests.cpu": "2", "limits.cpu": "6", "requests.memory": "4Gi", "limits.memory": "8Gi",
         "requests.storage": "50Gi", "pods": 20},
        "ResourceQuota of the monitoring namespace (same keys as logging_quota).",
        check=checks.quota, env=None,
    )  # fmt: skip
    priority_class: str = setting(
        "",
        "When set, a PriorityClass of this name is created and given to the app pods.",
        check=checks.optional_dns_label,
    )
    priority_value: int = setting(100000, "Value of that PriorityClass.", check=checks.priority)


@dataclass(frozen=True)
class ObservabilitySettings:
    """Metrics, alerts and logs: Prometheus, Alertmanager, Grafana, Elasticsearch, Fluentd, Kibana."""

    # --- observability ---
    monitoring: bool = setting(True, "Let Prometheus in the monitoring namespace scrape the app's /metrics.")
    monitoring_namespace: str = setting(
        "monitoring", "Namespace of Prometheus: another than the app's and the logging one.", check=checks.dns_label
    )
    monitoring_mode: str = setting(
        "standalone",
        "'standalone': a Prometheus, kube-state-metrics and node-exporter in the monitoring namespace; "
        "'operator': PodMonitor and PrometheusRule objects for an existing Prometheus Operator.",
        choices=("standalone", "operator"),
    )
    prometheus_image: str = setting("prom/prometheus:v2.54.1", "Image of Prometheus.", check=checks.image)
    kube_state_metrics_image: str = setting(
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0",
        "Image of kube-state-metrics.",
        check=checks.image,
    )
    node_exporter_image: str = setting(
        "quay.io/prometheus/node-exporter:v1.8.2", "Image of node-exporter.", check=checks.image
    )
    prometheus_retention: str = setting("15d", "How long Prometheus keeps samples.", check=checks.retention)
    prometheus_storage_size: str = setting("20Gi", "Size of Prometheus's data volume.", check=checks.memory)
    runbook_url: str = setting(
        "https://docs.example.com/django-k8s-aws/runbooks.html",
        "The published page of docs/runbooks.md (make docs writes it as runbooks.html); every alert links to its "
        "section there, as this URL + '#' + the section's anchor.",
        check=checks.http_url,
    )
    prometheus_scrape_interval: str = setting("30s", "How often Prometheus scrapes its targets.", check=checks.duration)
    prometheus_evaluation_interval: str = setting(
        "30s", "How often Prometheus evaluates the alert rules.", check=checks.duration
    )
    app_down_after: str = setting(
        "5m", "How long no pod of the app answers /metrics before DjangoAppDown fires.", check=checks.duration
    )
    alertmanager_image: str = setting(
        "quay.io/prometheus/alertmanager:v0.27.0", "Image of Alertmanager.", check=checks.image
    )
    alertmanager_storage_size: str = setting(
        "1Gi",
        "Size of Alertmanager's volume (silences and the notification log survive a restart).",
        check=checks.memory,
    )
    alert_email_to: list = setting(
        [], "Addresses that receive alerts by e-mail (empty: no e-mail receiver).", check=checks.emails
    )
    alert_email_from: str = setting("", "Sender address of alert e-mails.", check=checks.optional_email)
    alert_smtp_smarthost: str = setting(
        "", "SMTP server of alert e-mails, as host:port (STARTTLS is required).", check=checks.smarthost
    )
    alert_smtp_username: str = setting(
        "", "SMTP user of alert e-mails; its password is the secret DEPLOY_ALERT_SMTP_PASSWORD."
    )
    alert_webhook: str = setting(
        "",
        "'slack' (a Slack incoming webhook) or 'webhook' (Alertmanager's generic JSON webhook); its URL is "
        "the secret DEPLOY_ALERT_WEBHOOK_URL. Empty: none.",
        choices=("", "slack", "webhook"),
    )
    alert_slack_channel: str = setting("#alerts", "Slack channel of alerts.")
    alert_sns_topic_arn: str = setting(
        "",
        "Amazon SNS topic that receives alerts (Alertmanager signs with the role DEPLOY_ALERT_SNS_ROLE_ARN, for "
        "the topic's region, taken from the ARN).",
        check=checks.sns_topic_arn,
    )
    alert_sns_role_arn: str = setting(
        "", "IAM role of Alertmanager's ServiceAccount (IRSA) allowed sns:Publish on the topic.", check=checks.role_arn
    )
    alert_critical_via: list = setting(
        ["email", "webhook", "sns"],
        "Receivers of critical alerts, among the configured ones: email, webhook, sns.",
        check=checks.receivers,
    )
    alert_warning_via: list = setting(
        ["email", "webhook"],
        "Receivers of warning alerts, among the configured ones: email, webhook, sns.",
        check=checks.receivers,
    )
    alert_watchdog: bool = setting(
        False,
        "Post the always-firing Watchdog alert every 5 minutes to a dead man's switch (a service that pages when "
        "the posts stop), at the secret DEPLOY_ALERT_WATCHDOG_URL. Off: the Watchdog goes to no receiver "
        "(standalone monitoring).",
    )
    alert_group_wait: str = setting("30s", "How long Alertmanager waits to group a new alert.", check=checks.duration)
    alert_group_interval: str = setting(
        "5m", "How long before Alertmanager sends a group's changes (new or resolved alerts).", check=checks.duration
    )
    alert_repeat_interval: str = setting(
        "4h", "How long before a still-firing alert is sent again.", check=checks.duration
    )
    grafana_image: str = setting(
        "grafana/grafana:11.2.2", "Image of Grafana (standalone monitoring).", check=checks.image
    )
    logging: bool = setting(True, "Collect the app's JSON logs (EFK).")
    elasticsearch_replicas: int = setting(
        1, "Elasticsearch nodes: 1, or 3 for a highly available cluster.", choices=(1, 3)
    )
    elasticsearch_image: str = setting(
        "docker.elastic.co/elasticsearch/elasticsearch:8.15.3", "Image of Elasticsearch.", check=checks.image
    )
    elasticsearch_storage_size: str = setting("50Gi", "Size of each Elasticsearch node's volume.", check=checks.memory)
    kibana_image: str = setting("docker.elastic.co/kibana/kibana:8.15.3", "Image of Kibana.", check=checks.image)
    fluentd_image: str = setting(
        "fluent/fluentd-kubernetes-daemonset:v1.17.1-debian-elasticsearch8-1.0",
        "Image of Fluentd (with the Elasticsearch, Kubernetes metadata and concat plugins).",
        check=checks.image,
    )
    curl_image: str = setting(
        "curlimages/curl:8.10.1", "Image of the Job that sets up the log indexes and Kibana.", check=checks.image
    )
    log_retention_days: int = setting(
        14, "Days Elasticsearch keeps log indexes (index lifecycle policy).", check=checks.positive
    )
    logging_namespace: str = setting(
        "logging",
        "Namespace of Elasticsearch, Fluentd and Kibana: another than the app's and the monitoring one.",
        check=checks.dns_label,
    )

    @property
    def alert_sns_region(self):
        """The region of the SNS topic, from its ARN (arn:PARTITION:sns:REGION:ACCOUNT:NAME); '' without one."""
        match = checks.SNS_ARN.fullmatch(self.alert_sns_topic_arn)
        return match.group(1) if match else ""


@dataclass(frozen=True)
class AwsSettings:
    """AWS: the EKS cluster, the cut-over bucket, staff access and the infrastructure stack (aws_provision)."""

    # --- AWS ---
    eks_cluster: str = setting(
        "", "EKS cluster to deploy to (its endpoint, CA and tokens come from AWS; no AWS CLI needed)."
    )
    aws_region: str = setting("", "AWS region (default: the AWS SDK's, from AWS_REGION or the profile).")
    aws_profile: str = setting("", "AWS profile (default: the standard credential chain).")
    cutover_bucket: str = setting(
        "",
        "S3 bucket that carries the SQLite file into the cluster for k8s_deploy --cutover (written by the operator, "
        "read by the cut-over Job through its own pod identity; aws_provision makes it: its CutoverBucket output); "
        "empty: --cutover refuses to start.",
        check=checks.bucket_name,
    )
    cutover_smoke_path: str = setting(
        "/",
        "Page the cut-over's smoke test requests through the Kubernetes API's service proxy, after the readiness "
        "path, as a visitor of the first of 'hosts' (it must answer 200: choose a page that reads the database).",
        check=checks.url_path,
    )
    # --- staff access (docs/security.md#staff-access-rbac) ---
    staff_read_only_group: str = setting(
        "staff:read-only",
        "Kubernetes group bound to the read-only role in every namespace of the stack (no Secrets, no exec).",
        check=checks.kubernetes_group("staff:read-only"),
    )
    staff_operator_group: str = setting(
        "staff:operators",
        "Kubernetes group bound to the operator role (read-only plus restart, scale, port-forward, exec, Jobs).",
        check=checks.kubernetes_group("staff:operators"),
    )
    staff_access: dict = setting(
        {},
        "IAM roles or users given access to the cluster by aws_provision (EKS access entries), each mapped to "
        "'read-only' or 'operator': {'arn:aws:iam::123456789012:role/support': 'read-only'}.",
        check=checks.staff_access,
        env=None,
    )
    app_role_arn: str = setting(
        "",
        "IAM role of the app's ServiceAccount (IRSA annotation), when the app calls AWS APIs.",
        check=checks.role_arn,
    )
    # --- AWS infrastructure (aws_provision) ---
    aws_stack_name: str = setting("", "CloudFormation stack of the infrastructure (default: APP-infra).")
    aws_availability_zones: list = setting([], "Availability zones (at least 2); empty: the region's first two.")
    public_subnet_cidrs: list = setting(
        ["10.0.0.0/20", "10.0.16.0/20"], "Public subnets (load balancers, NAT), one per zone."
    )
    private_subnet_cidrs: list = setting(
        ["10.0.64.0/18", "10.0.128.0/18"], "Private subnets (nodes, pods), one per zone."
    )
    nat_gateways: str = setting(
        "single",
        "'single': one NAT gateway (cheaper); 'per-az': one per zone (survives a zone).",
        choices=("single", "per-az"),
    )
    node_instance_type: str = setting("t3.large", "EC2 instance type of the nodes.")
    node_allocatable_cpu: str = setting(
        "",
        "What one node offers to pods (its allocatable CPU, as 'kubectl describe node' shows it), for the render's "
        "capacity check: set it with node_allocatable_memory for a node_instance_type the capacity table does not "
        "know, or to use measured figures instead of the table's. Empty: from the table.",
        check=checks.optional_cpu,
    )
    node_allocatable_memory: str = setting(
        "",
        "What one node offers to pods in memory (its allocatable memory), with node_allocatable_cpu. Empty: "
        "from the table.",
        check=checks.optional_memory,
    )
    node_count_min: int = setting(
        3,
        "Fewest nodes of the managed node group (its size: no cluster autoscaler is installed). Three t3.large "
        "hold the default stack at its largest; the render's capacity check says when they do not (docs/policy.md).",
        check=checks.positive,
    )
    node_count_max: int = setting(4, "Most nodes of the managed node group.", check=checks.positive)
    node_disk_size: int = setting(50, "Disk of each node, in GiB.", check=checks.positive)
    rds_engine_version: str = setting(
        "16.10",
        "PostgreSQL version of the RDS instance (postgres_mode 'rds'), MAJOR.MINOR as RDS offers it (cfn-lint "
        "refuses a version RDS no longer creates); its parameter group family is postgresMAJOR. The default keeps "
        "the in-cluster image's major version, so a dump moves between the modes.",
        check=checks.postgres_version,
    )
    rds_instance_class: str = setting(
        "db.t4g.medium",
        "Instance class of the RDS instance (postgres_mode 'rds'), such as 'db.t4g.medium' or 'db.m7g.large'.",
        check=checks.rds_instance_class,
    )
    rds_storage_size: int = setting(
        20, "Storage of the RDS instance in GiB (gp3, 20 to 65536; postgres_mode 'rds').", check=checks.rds_storage
    )
    rds_multi_az: bool = setting(
        True,
        "A synchronous standby in a second zone that RDS fails over to (postgres_mode 'rds'); false halves the "
        "cost and loses the zone's failure to a restore.",
    )
    rds_backup_retention_days: int = setting(
        7,
        "Days RDS keeps automated backups and the log for a restore to any point in time (1 to 35; "
        "postgres_mode 'rds').",
        check=checks.rds_retention,
    )


@dataclass(frozen=True)
class DeliverySettings:
    """Templates, environments, secrets' source and delivery (docs/delivery.md), the project's own flows."""

    # --- templates ---
    template_dirs: list = setting(
        [],
        "Folders searched for templates before the built-in k8s_templates/: "
        "a project overrides a template by its relative name.",
    )
    # --- environments and delivery (docs/delivery.md) ---
    environments: dict = setting(
        {},
        "Named environments (such as 'staging' and 'production'): each maps to the settings it changes, "
        "for example {'staging': {'namespace': 'shop-staging', 'hosts': ['staging.shop.example.com']}}. "
        "--environment NAME selects one; the other settings are shared. Environment variables still win.",
        check=checks.environments,
        env=None,
    )
    environment: str = setting(
        "", "The selected environment's name (set by --environment; empty when none is selected).", env=None
    )
    secrets_name: str = setting(
        "",
        "AWS Secrets Manager secret holding this environment's secret values as one JSON object of strings, with "
        f"any of the keys {', '.join(SECRET_ENV.values())} (the alert receivers' only when they are configured); "
        "k8s_deploy reads it when it applies, and then not those environment variables. Empty: the environment "
        "variables.",
        check=checks.secret_name,
    )
    secrets_source: str = setting(
        "environment",
        "Where the cluster's secret values come from. 'environment': k8s_deploy writes Kubernetes Secrets from "
        "DEPLOY_SECRET_KEY, DEPLOY_POSTGRES_PASSWORD, DEPLOY_REDIS_PASSWORD and "
        "DEPLOY_POSTGRES_SUPERUSER_PASSWORD (or from DEPLOY['secrets_name']); for clusters off AWS. "
        "'aws-secrets-manager': the secrets aws_provision generated in AWS Secrets Manager reach the cluster "
        "through the External Secrets Operator (ExternalSecret objects, no value in the render), so k8s_deploy "
        "needs none of them (docs/security.md#secrets-from-aws-secrets-manager).",
        choices=("environment", "aws-secrets-manager"),
    )
    secrets_reader_role_arn: str = setting(
        "",
        "IAM role the External Secrets Operator assumes to read this app's secrets (the infrastructure stack's "
        "SecretsReaderRoleArn output); required with secrets_source 'aws-secrets-manager'.",
        check=checks.role_arn,
    )
    secrets_refresh_interval: str = setting(
        "1h",
        "How often the External Secrets Operator copies the values from Secrets Manager into the cluster's "
        "Secrets (a rotated value reaches the Secret within this time; pods read it at their next start).",
        check=checks.refresh_interval,
    )
    github_repository: str = setting(
        "",
        "GitHub repository ('owner/name') whose workflows may assume the delivery roles (aws_provision --delivery).",
        check=checks.github_repository,
    )
    github_branch: str = setting(
        "main",
        "Branch whose pushes build and deploy (the pipeline's trigger and the build role's trust).",
        check=checks.git_ref_name,
    )
    github_environment: str = setting(
        "",
        "GitHub environment of this environment's deploy job; only jobs in it may assume its role "
        "(default: the environment's name).",
        check=checks.optional_git_ref_name,
    )
    github_oidc_provider: str = setting(
        "create",
        "'create': the delivery stack creates the account's GitHub OIDC identity provider; "
        "'existing': the account already has one (there can be only one per account).",
        choices=("create", "existing"),
    )
    aws_cloudformation_role_arn: str = setting(
        "",
        "Role CloudFormation assumes to change the stacks (the delivery stack's CloudFormationRoleArn output); "
        "empty: the caller's own permissions.",
        check=checks.role_arn,
    )
    ci_cluster_access: str = setting(
        "cluster",
        "What the environment's deploy role may do in its cluster (EKS access entry): 'cluster': cluster "
        "administrator, needed when it applies cluster-scoped objects (Namespace, ClusterRoles, StorageClasses); "
        "'namespace': administrator of this environment's namespaces only, for a cluster shared with another "
        "environment; k8s_deploy still applies the cluster-scoped objects, which this access refuses, so it "
        "suits only a render without them (not yet an option).",
        choices=("cluster", "namespace"),
    )
    extra_flows: list = setting(
        [],
        "Network flows a project's own templates add, each 'SOURCE -> DESTINATION PORT/PROTOCOL' as on the "
        "Network flows reference page (e.g. 'django-app/worker -> 0.0.0.0/0 443/TCP'): the render refuses any "
        "NetworkPolicy allow that is neither needed by the stack nor listed here.",
        check=checks.flows,
    )

    @property
    def github_deploy_environment(self):
        """The GitHub environment of this environment's deploy job: github_environment, or the environment's name."""
        return self.github_environment or self.environment


# dataclasses collects fields from the last base to the first: AppSettings' fields come first.
@dataclass(frozen=True)
class DeployConfig(
    DeliverySettings, AwsSettings, ObservabilitySettings, PolicySettings, RedisSettings, PostgresSettings, AppSettings
):
    """The whole configuration: every group's settings, flat, validated by ``load_config``."""
