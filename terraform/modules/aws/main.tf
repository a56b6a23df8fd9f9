data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  # Ports of docs/contract: the server listens on 9090, the controller
  # serves /healthz and /readyz on 8080.
  server_port        = 9090
  health_port        = 8080
  server_container   = "server"
  server_dns_name    = "robot-server"
  controller_name    = "controller"
  server_url         = "http://${local.server_dns_name}.${var.service_discovery_namespace}:${local.server_port}"
  vpc_id             = var.create_vpc ? aws_vpc.this[0].id : var.vpc_id
  private_subnet_ids = var.create_vpc ? aws_subnet.private[*].id : var.private_subnet_ids

  kubeconfig_secret_arn = var.create_kubeconfig_secret ? aws_secretsmanager_secret.kubeconfig[0].arn : var.kubeconfig_secret_arn
  kubeconfig_source     = "aws-secretsmanager://${local.kubeconfig_secret_arn}"

  # The controller runs either as an ECS service or as a scheduled
  # Lambda, never both: two controllers would reconcile the same Robots.
  use_lambda = var.controller_runtime == "lambda"

  # One pass at a time unless leader election arbitrates: ECS then stops
  # the old controller task before it starts the new one.
  controller_min_healthy_percent = var.leader_election ? 100 : 0
  controller_max_percent         = var.leader_election ? 200 : 100

  # The controller's settings, shared by the ECS task and the Lambda mode.
  controller_settings = {
    ROBOT_CONTROLLER_KUBECONFIG_SOURCE         = local.kubeconfig_source
    ROBOT_CONTROLLER_ALLOWED_ENDPOINTS         = local.server_url
    ROBOT_CONTROLLER_SERVER_AUTH               = "none"
    ROBOT_CONTROLLER_API_GROUP                 = var.api_group
    ROBOT_CONTROLLER_LEADER_ELECTION           = tostring(var.leader_election)
    ROBOT_CONTROLLER_LEADER_ELECTION_NAMESPACE = var.leader_election_namespace
    ROBOT_CONTROLLER_LOG_FORMAT                = "json"
    ROBOT_CONTROLLER_LOG                       = var.controller_log_filter
  }
  controller_task_settings = merge(local.controller_settings, {
    ROBOT_CONTROLLER_HEALTH_LISTEN = "0.0.0.0:${local.health_port}"
  })
  server_settings = {
    ROBOT_SERVER_LISTEN     = "0.0.0.0:${local.server_port}"
    ROBOT_SERVER_LOG_FORMAT = "json"
    ROBOT_SERVER_LOG        = var.server_log_filter
  }

  # Egress of the controller: the control plane and the AWS APIs, folded
  # so that one (port, CIDR) pair is one rule (AWS rejects duplicates).
  controller_egress = merge(
    { for cidr in var.aws_api_cidr_blocks : "443-${cidr}" => { port = 443, cidr = cidr, what = "AWS APIs (Secrets Manager, ECR, CloudWatch Logs)" } },
    { for cidr in var.control_plane_cidr_blocks : "${var.control_plane_port}-${cidr}" => { port = var.control_plane_port, cidr = cidr, what = "Kubernetes control plane" } },
  )

  run_task_network = "awsvpcConfiguration={subnets=[${join(",", local.private_subnet_ids)}],securityGroups=[${aws_security_group.controller.id}],assignPublicIp=DISABLED}"
  run_task_overrides = jsonencode({
    containerOverrides = [{ name = local.controller_name, command = ["once"] }]
  })
}

################################################################################
# VPC (optional): private subnets, one public subnet with a NAT gateway
################################################################################

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first az_count names are used and the provider sorts them, so a zone AWS adds later never moves an existing subnet.
  count = var.create_vpc ? 1 : 0
  state = "available"
}

resource "aws_vpc" "this" {
  count = var.create_vpc ? 1 : 0

  cidr_block = var.vpc_cidr
  # Cloud Map private DNS needs both; so does RunTask's ENI naming.
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(var.tags, { Name = var.name })
}

# The default security group of a new VPC allows all traffic between its
# members: take every rule away so nothing relies on it.
resource "aws_default_security_group" "this" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = "${var.name}-default-deny" })
}

resource "aws_subnet" "private" {
  count = var.create_vpc ? var.az_count : 0

  vpc_id            = aws_vpc.this[0].id
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  availability_zone = data.aws_availability_zones.available[0].names[count.index]

  tags = merge(var.tags, { Name = "${var.name}-private-${count.index}" })
}

resource "aws_subnet" "public" {
  count = var.create_vpc ? 1 : 0

  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, 15)
  availability_zone       = data.aws_availability_zones.available[0].names[0]
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_internet_gateway" "this" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_eip" "nat" {
  count = var.create_vpc ? 1 : 0

  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-nat" })

  depends_on = [aws_internet_gateway.this]
}

# One NAT gateway: the controller's traffic is small, and a zone outage
# only delays reconciliation until ECS places the task elsewhere.
resource "aws_nat_gateway" "this" {
  count = var.create_vpc ? 1 : 0

  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  tags          = merge(var.tags, { Name = var.name })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  count = var.create_vpc ? 1 : 0

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count = var.create_vpc ? 1 : 0

  subnet_id      = aws_subnet.public[0].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_route_table" "private" {
  count = var.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(var.tags, { Name = "${var.name}-private" })
}

resource "aws_route" "private_nat" {
  count = var.create_vpc ? 1 : 0

  route_table_id         = aws_route_table.private[0].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

resource "aws_route_table_association" "private" {
  count = var.create_vpc ? var.az_count : 0

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[0].id
}

resource "aws_cloudwatch_log_group" "flow_log" {
  count = var.create_vpc && var.enable_flow_log ? 1 : 0

  name              = "/aws/vpc-flow-log/${var.name}"
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.cloudwatch_log_group_kms_key_id
  tags              = var.tags
}

data "aws_iam_policy_document" "flow_log_assume" {
  count = var.create_vpc && var.enable_flow_log ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "flow_log" {
  count = var.create_vpc && var.enable_flow_log ? 1 : 0

  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_log[0].arn}:*"]
  }
}

resource "aws_iam_role" "flow_log" {
  count = var.create_vpc && var.enable_flow_log ? 1 : 0

  name               = "${var.name}-vpc-flow-log"
  assume_role_policy = data.aws_iam_policy_document.flow_log_assume[0].json
  tags               = var.tags
}

resource "aws_iam_role_policy" "flow_log" {
  count = var.create_vpc && var.enable_flow_log ? 1 : 0

  name   = "write-flow-log"
  role   = aws_iam_role.flow_log[0].id
  policy = data.aws_iam_policy_document.flow_log[0].json
}

resource "aws_flow_log" "this" {
  count = var.create_vpc && var.enable_flow_log ? 1 : 0

  vpc_id               = aws_vpc.this[0].id
  traffic_type         = "ALL"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_log[0].arn
  iam_role_arn         = aws_iam_role.flow_log[0].arn
  tags                 = var.tags
}

################################################################################
# Security groups: only the controller reaches the server
################################################################################

resource "aws_security_group" "server" {
  name        = "${var.name}-server"
  description = "robot-server: reached by the controller only"
  vpc_id      = local.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-server" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "controller" {
  name        = "${var.name}-controller"
  description = "robot-controller: no ingress; egress to the server, the control plane and AWS APIs"
  vpc_id      = local.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-controller" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "server_from_controller" {
  security_group_id            = aws_security_group.server.id
  description                  = "robot API from the controller"
  referenced_security_group_id = aws_security_group.controller.id
  ip_protocol                  = "tcp"
  from_port                    = local.server_port
  to_port                      = local.server_port
  tags                         = var.tags
}

# The server calls nothing itself; Fargate pulls its image and ships its
# logs through the task's network interface.
resource "aws_vpc_security_group_egress_rule" "server_aws_apis" {
  for_each = toset(var.aws_api_cidr_blocks)

  security_group_id = aws_security_group.server.id
  description       = "AWS APIs (ECR image pull, CloudWatch Logs)"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = var.tags
}

resource "aws_vpc_security_group_egress_rule" "controller_to_server" {
  security_group_id            = aws_security_group.controller.id
  description                  = "robot API on the server"
  referenced_security_group_id = aws_security_group.server.id
  ip_protocol                  = "tcp"
  from_port                    = local.server_port
  to_port                      = local.server_port
  tags                         = var.tags
}

# DNS to the VPC resolver is not filtered by security groups, so no rule
# for port 53 is needed.
resource "aws_vpc_security_group_egress_rule" "controller_out" {
  for_each = local.controller_egress

  security_group_id = aws_security_group.controller.id
  description       = each.value.what
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  tags              = var.tags
}

################################################################################
# Kubeconfig secret
################################################################################

resource "aws_secretsmanager_secret" "kubeconfig" {
  #checkov:skip=CKV2_AWS_57:The kubeconfig is rotated by whoever issues it (put-secret-value); the controller re-reads the secret, so no rotation Lambda applies.
  count = var.create_kubeconfig_secret ? 1 : 0

  name                    = "${var.name}/kubeconfig"
  description             = "Kubeconfig with which robot-controller reaches the control plane"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.recovery_window_in_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "kubeconfig" {
  count = var.create_kubeconfig_secret && var.kubeconfig_version != null ? 1 : 0

  secret_id = aws_secretsmanager_secret.kubeconfig[0].id
  # Write-only: the value goes to AWS, never into the plan or the state.
  # The empty fallback only lets `destroy` run without the kubeconfig;
  # the precondition stops any write of it.
  secret_string_wo         = var.kubeconfig == null ? "" : var.kubeconfig
  secret_string_wo_version = var.kubeconfig_version

  lifecycle {
    precondition {
      condition     = var.kubeconfig != null && trimspace(coalesce(var.kubeconfig, " ")) != ""
      error_message = "kubeconfig_version is set, so kubeconfig must hold the kubeconfig to write (e.g. TF_VAR_kubeconfig=\"$(cat kubeconfig)\")."
    }
  }
}

################################################################################
# Logs
################################################################################

resource "aws_cloudwatch_log_group" "server" {
  name              = "/ecs/${var.name}/server"
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.cloudwatch_log_group_kms_key_id
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "controller" {
  name              = "/ecs/${var.name}/controller"
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.cloudwatch_log_group_kms_key_id
  tags              = var.tags
}

################################################################################
# IAM: one execution role, a task role for the controller only
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-ecs-execution"
  description        = "Pulls the images and writes the logs of the robot-byoc tasks"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "read_kubeconfig" {
  statement {
    sid       = "ReadKubeconfig"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.kubeconfig_secret_arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptKubeconfig"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "controller" {
  name               = "${var.name}-controller"
  description        = "robot-controller task: reads the kubeconfig secret"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "controller" {
  name   = "read-kubeconfig"
  role   = aws_iam_role.controller.id
  policy = data.aws_iam_policy_document.read_kubeconfig.json
}

################################################################################
# ECS
################################################################################

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = var.service_discovery_namespace
  description = "robot-byoc: the robot server's private name"
  vpc         = local.vpc_id
  tags        = var.tags
}

resource "aws_service_discovery_service" "server" {
  name = local.server_dns_name

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  # ECS registers and deregisters the task as it starts and stops.
  health_check_custom_config {
    failure_threshold = 1
  }

  tags = var.tags
}

resource "aws_ecs_task_definition" "server" {
  family                   = "${var.name}-server"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.server_cpu
  memory                   = var.server_memory
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([{
    name      = local.server_container
    image     = var.server_image
    essential = true
    # Fargate needs only the task-level memory; the container-level value
    # is harmless and some tooling (and moto's RunTask) wants it.
    memory                 = var.server_memory
    readonlyRootFilesystem = true
    stopTimeout            = var.stop_timeout
    # The image has no shell: the binary probes its own /healthz.
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/robot-server", "healthcheck"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 15
    }
    portMappings = [{
      name          = "http"
      containerPort = local.server_port
      protocol      = "tcp"
    }]
    environment = [for k in sort(keys(local.server_settings)) : { name = k, value = local.server_settings[k] }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.server.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "server"
      }
    }
  }])

  tags = var.tags
}

resource "aws_ecs_task_definition" "controller" {
  family                   = "${var.name}-controller"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.controller_cpu
  memory                   = var.controller_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.controller.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([{
    name                   = local.controller_name
    image                  = var.controller_image
    essential              = true
    memory                 = var.controller_memory
    readonlyRootFilesystem = true
    stopTimeout            = var.stop_timeout
    # The image has no shell: the binary probes its own /healthz.
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/robot-controller", "healthcheck"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 15
    }
    # /healthz and /readyz, for anyone who looks from inside the VPC; no
    # ingress rule lets anything in.
    portMappings = [{
      name          = "health"
      containerPort = local.health_port
      protocol      = "tcp"
    }]
    environment = [for k in sort(keys(local.controller_task_settings)) : { name = k, value = local.controller_task_settings[k] }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.controller.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "controller"
      }
    }
  }])

  tags = var.tags
}

# The server keeps its state in memory: exactly one task, and the old one
# stops before the new one starts.
resource "aws_ecs_service" "server" {
  name                               = "${var.name}-server"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.server.arn
  launch_type                        = "FARGATE"
  desired_count                      = 1
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100
  enable_execute_command             = false
  propagate_tags                     = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.server.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.server.arn
  }

  tags = var.tags
}

resource "aws_ecs_service" "controller" {
  count = local.use_lambda ? 0 : 1

  name                               = "${var.name}-controller"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.controller.arn
  launch_type                        = "FARGATE"
  desired_count                      = 1
  deployment_minimum_healthy_percent = local.controller_min_healthy_percent
  deployment_maximum_percent         = local.controller_max_percent
  enable_execute_command             = false
  propagate_tags                     = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.controller.id]
    assign_public_ip = false
  }

  tags = var.tags

  # The role must be able to read the secret before the first task starts.
  depends_on = [aws_iam_role_policy.controller]
}

################################################################################
# Lambda mode (controller_runtime = "lambda"): one pass per scheduled
# invocation, instead of the ECS service
################################################################################

resource "aws_cloudwatch_log_group" "lambda" {
  count = local.use_lambda ? 1 : 0

  name              = "/aws/lambda/${var.name}-controller"
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.cloudwatch_log_group_kms_key_id
  tags              = var.tags
}

data "aws_iam_policy_document" "lambda_assume" {
  count = local.use_lambda ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "lambda_logs" {
  count = local.use_lambda ? 1 : 0

  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda[0].arn}:*"]
  }
}

resource "aws_iam_role" "lambda" {
  count = local.use_lambda ? 1 : 0

  name               = "${var.name}-controller-lambda"
  description        = "robot-controller Lambda: reads the kubeconfig secret, runs in the VPC"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume[0].json
  tags               = var.tags
}

# Creating and removing the function's network interfaces in the subnets.
resource "aws_iam_role_policy_attachment" "lambda_vpc" {
  count = local.use_lambda ? 1 : 0

  role       = aws_iam_role.lambda[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy" "lambda_kubeconfig" {
  count = local.use_lambda ? 1 : 0

  name   = "read-kubeconfig"
  role   = aws_iam_role.lambda[0].id
  policy = data.aws_iam_policy_document.read_kubeconfig.json
}

resource "aws_iam_role_policy" "lambda_logs" {
  count = local.use_lambda ? 1 : 0

  name   = "write-logs"
  role   = aws_iam_role.lambda[0].id
  policy = data.aws_iam_policy_document.lambda_logs[0].json
}

resource "aws_lambda_function" "controller" {
  #checkov:skip=CKV_AWS_116:Invoked by EventBridge Scheduler every few minutes; a failed pass is redone by the next tick, so a dead-letter queue would only collect noise.
  #checkov:skip=CKV_AWS_272:The package is built from this repository by cargo lambda; code signing needs a signing profile the user owns, not one this module can create.
  #checkov:skip=CKV_AWS_173:The environment holds only the secret's ARN and settings, no secret values; the kubeconfig itself stays in Secrets Manager.
  count = local.use_lambda ? 1 : 0

  function_name    = "${var.name}-controller"
  description      = "robot-controller lambda mode: one reconcile pass per invocation"
  role             = aws_iam_role.lambda[0].arn
  filename         = var.lambda_package_path
  source_code_hash = filebase64sha256(var.lambda_package_path)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]
  timeout          = var.lambda_timeout
  memory_size      = var.lambda_memory_size
  # One pass at a time: a slow pass makes the next tick wait (throttled
  # and retried by the scheduler) instead of racing it.
  reserved_concurrent_executions = 1

  vpc_config {
    subnet_ids         = local.private_subnet_ids
    security_group_ids = [aws_security_group.controller.id]
  }

  environment {
    variables = local.controller_settings
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.lambda[0].name
  }

  tracing_config {
    mode = "PassThrough"
  }

  tags = var.tags

  depends_on = [
    aws_iam_role_policy.lambda_kubeconfig,
    aws_iam_role_policy.lambda_logs,
    aws_iam_role_policy_attachment.lambda_vpc,
  ]
}

data "aws_iam_policy_document" "scheduler_assume" {
  count = local.use_lambda ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "scheduler_invoke" {
  count = local.use_lambda ? 1 : 0

  statement {
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.controller[0].arn]
  }

  # A schedule encrypted with a customer key is decrypted with this role.
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  count = local.use_lambda ? 1 : 0

  name               = "${var.name}-controller-schedule"
  description        = "EventBridge Scheduler: invokes the robot-controller Lambda"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume[0].json
  tags               = var.tags
}

resource "aws_iam_role_policy" "scheduler" {
  count = local.use_lambda ? 1 : 0

  name   = "invoke-controller"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler_invoke[0].json
}

resource "aws_scheduler_schedule" "controller" {
  count = local.use_lambda ? 1 : 0

  name                = "${var.name}-controller"
  description         = "One robot-controller pass"
  schedule_expression = var.lambda_schedule_expression
  kms_key_arn         = var.kms_key_arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.controller[0].arn
    role_arn = aws_iam_role.scheduler[0].arn
    input    = jsonencode({ source = "robot-byoc.schedule" })

    # A missed tick is made up by the next one.
    retry_policy {
      maximum_retry_attempts = 0
    }
  }
}
