################################################################################
# Naming and images
################################################################################

variable "name" {
  description = "Prefix of every resource name (cluster, services, roles, log groups, security groups)."
  type        = string
  default     = "robot-byoc"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "name must be 2-24 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen (IAM role names add suffixes up to 64 characters)."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}

variable "server_image" {
  description = "Container image of robot-server (e.g. an ECR URI with a tag or digest). No default: there is no public image to point at."
  type        = string

  validation {
    condition     = length(trimspace(var.server_image)) > 0 && !can(regex("\\s", var.server_image))
    error_message = "server_image must be a non-empty image reference without whitespace."
  }
}

variable "controller_image" {
  description = "Container image of robot-controller. No default: there is no public image to point at."
  type        = string

  validation {
    condition     = length(trimspace(var.controller_image)) > 0 && !can(regex("\\s", var.controller_image))
    error_message = "controller_image must be a non-empty image reference without whitespace."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the Fargate tasks: X86_64 or ARM64 (Graviton). The images must be built for it."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

################################################################################
# Network
################################################################################

variable "create_vpc" {
  description = "Create a small VPC (private subnets, one public subnet with a NAT gateway). When false, pass vpc_id and private_subnet_ids."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "CIDR block (/16 to /24) of the VPC created when create_vpc is true; each subnet takes a sixteenth of it."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    # Terraform evaluates both sides of &&: try() guards the prefix lookup.
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 24, false)
    error_message = "vpc_cidr must be an IPv4 CIDR block with a prefix length between /16 and /24."
  }
}

variable "az_count" {
  description = "Number of availability zones (one private subnet each) used when create_vpc is true."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 4 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number from 1 to 4."
  }
}

variable "enable_flow_log" {
  description = "Send the created VPC's flow log (rejected and accepted traffic) to a CloudWatch log group."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "ID of an existing VPC (when create_vpc is false). It needs DNS support and DNS hostnames enabled for Cloud Map."
  type        = string
  default     = null

  validation {
    condition     = var.create_vpc || (var.vpc_id != null && can(regex("^vpc-[0-9a-f]+$", coalesce(var.vpc_id, "-"))))
    error_message = "vpc_id (vpc-...) is required when create_vpc is false."
  }
}

variable "private_subnet_ids" {
  description = "IDs of existing private subnets for the tasks (when create_vpc is false). They need a route to the control plane (NAT or similar)."
  type        = list(string)
  default     = []

  validation {
    condition     = var.create_vpc || (length(var.private_subnet_ids) > 0 && alltrue([for id in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))]))
    error_message = "private_subnet_ids (subnet-...) must name at least one subnet when create_vpc is false."
  }
}

variable "control_plane_cidr_blocks" {
  description = "IPv4 CIDR blocks of the Kubernetes control plane the controller dials out to. Narrow this when its address is known."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.control_plane_cidr_blocks) > 0 && alltrue([for c in var.control_plane_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "control_plane_cidr_blocks must hold at least one valid IPv4 CIDR block."
  }
}

variable "control_plane_port" {
  description = "TCP port of the control plane's API server (443 for most managed clusters, 6443 for kubeadm)."
  type        = number
  default     = 443

  validation {
    condition     = var.control_plane_port >= 1 && var.control_plane_port <= 65535 && floor(var.control_plane_port) == var.control_plane_port
    error_message = "control_plane_port must be a TCP port number (1-65535)."
  }
}

variable "aws_api_cidr_blocks" {
  description = "IPv4 CIDR blocks reached on 443 for AWS APIs (Secrets Manager, ECR, CloudWatch Logs). Narrow it when VPC endpoints serve them."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.aws_api_cidr_blocks) > 0 && alltrue([for c in var.aws_api_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "aws_api_cidr_blocks must hold at least one valid IPv4 CIDR block."
  }
}

variable "service_discovery_namespace" {
  description = "Private DNS namespace (Cloud Map) in which the server is registered as robot-server.<namespace>."
  type        = string
  default     = "robot-byoc.internal"

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$", var.service_discovery_namespace))
    error_message = "service_discovery_namespace must be a DNS name of lowercase labels, e.g. robot-byoc.internal."
  }
}

################################################################################
# Kubeconfig secret
################################################################################

variable "create_kubeconfig_secret" {
  description = "Create the Secrets Manager secret that holds the control plane kubeconfig. When false, pass kubeconfig_secret_arn."
  type        = bool
  default     = true
}

variable "kubeconfig_secret_arn" {
  description = "ARN of an existing secret holding the kubeconfig (when create_kubeconfig_secret is false)."
  type        = string
  default     = null

  validation {
    condition     = var.create_kubeconfig_secret || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", coalesce(var.kubeconfig_secret_arn, "-")))
    error_message = "kubeconfig_secret_arn must be a Secrets Manager secret ARN when create_kubeconfig_secret is false."
  }
}

variable "kubeconfig" {
  description = "Kubeconfig to store as the secret's value. Ephemeral and written through a write-only attribute, so it never lands in the plan or state. Leave null and put the value with `aws secretsmanager put-secret-value` instead if you prefer."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "kubeconfig_version" {
  description = "Set (and bump to rotate) to write `kubeconfig` into the created secret; null writes nothing."
  type        = number
  default     = null

  validation {
    condition     = var.kubeconfig_version == null || (try(var.kubeconfig_version >= 1, false) && var.create_kubeconfig_secret)
    error_message = "kubeconfig_version must be a positive number, and only applies when create_kubeconfig_secret is true."
  }

  # The controller starts in the same apply that creates the secret: from
  # an empty secret its tasks fail, and the deployment circuit breaker
  # then stops the first deployment for good.
  validation {
    condition     = var.kubeconfig_version != null || !var.create_kubeconfig_secret
    error_message = "kubeconfig_version (and kubeconfig) must be set when the module creates the kubeconfig secret: the controller cannot start from an empty secret. To fill the secret yourself, create it first and pass create_kubeconfig_secret = false with kubeconfig_secret_arn."
  }
}

variable "server_token_version" {
  description = "Bump to rotate the server's bearer token: Secrets Manager generates a new 64-character value, written through a write-only attribute (never in the plan or state); the server task is redeployed with it and the controller re-reads it (on its refresh interval, or at once on a 401)."
  type        = number
  default     = 1

  validation {
    condition     = try(var.server_token_version >= 1, false)
    error_message = "server_token_version must be a positive number."
  }
}

variable "upbound_token" {
  description = "Upbound robot token for Upbound Cloud control planes, stored in its own secret (ephemeral, written through a write-only attribute, never in the plan or state). Set with upbound_token_version."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "upbound_token_version" {
  description = "Set (and bump to rotate) to store `upbound_token` in the secret <name>/upbound-token, allow the controller to read it and give it ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE; null: no Upbound token. While set, every plan needs `upbound_token`."
  type        = number
  default     = null

  validation {
    condition     = var.upbound_token_version == null || try(var.upbound_token_version >= 1, false)
    error_message = "upbound_token_version must be a positive number."
  }
}

variable "kms_key_arn" {
  description = "Customer managed KMS key that encrypts the created secret (or already encrypts the existing one), and the Lambda mode's schedule. The controller is then allowed kms:Decrypt on it through Secrets Manager only. Null uses AWS managed keys."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", coalesce(var.kms_key_arn, "-")))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "recovery_window_in_days" {
  description = "Days a deleted secret can be restored. 0 deletes it at once (examples and tests, so a re-apply can reuse the name)."
  type        = number
  default     = 30

  validation {
    condition     = var.recovery_window_in_days == 0 || (var.recovery_window_in_days >= 7 && var.recovery_window_in_days <= 30)
    error_message = "recovery_window_in_days must be 0 or from 7 to 30."
  }
}

################################################################################
# Logs
################################################################################

variable "log_retention_in_days" {
  description = "Retention of the CloudWatch log groups (tasks, Lambda, flow log)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_in_days)
    error_message = "log_retention_in_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ..., 3653)."
  }
}

variable "cloudwatch_log_group_kms_key_id" {
  description = "KMS key ARN that encrypts the log groups. Its key policy must allow the logs.<region>.amazonaws.com principal. Null uses CloudWatch's own encryption."
  type        = string
  default     = null

  validation {
    condition     = var.cloudwatch_log_group_kms_key_id == null || can(regex("^arn:aws[a-z-]*:kms:", coalesce(var.cloudwatch_log_group_kms_key_id, "-")))
    error_message = "cloudwatch_log_group_kms_key_id must be a KMS key ARN."
  }
}

################################################################################
# Tasks
################################################################################

variable "server_cpu" {
  description = "Fargate CPU units of the server task."
  type        = number
  default     = 256

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.server_cpu)
    error_message = "server_cpu must be one of 256, 512, 1024, 2048, 4096."
  }
}

variable "server_memory" {
  description = "Memory (MiB) of the server task; must suit server_cpu on Fargate."
  type        = number
  default     = 512

  validation {
    condition     = var.server_memory >= 512 && var.server_memory <= 30720
    error_message = "server_memory must be from 512 to 30720 MiB."
  }
}

variable "controller_cpu" {
  description = "Fargate CPU units of the controller task."
  type        = number
  default     = 256

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.controller_cpu)
    error_message = "controller_cpu must be one of 256, 512, 1024, 2048, 4096."
  }
}

variable "controller_memory" {
  description = "Memory (MiB) of the controller task; must suit controller_cpu on Fargate."
  type        = number
  default     = 512

  validation {
    condition     = var.controller_memory >= 512 && var.controller_memory <= 30720
    error_message = "controller_memory must be from 512 to 30720 MiB."
  }
}

variable "stop_timeout" {
  description = "Seconds ECS waits after SIGTERM before SIGKILL. Covers the graceful shutdown of both programs (the server's request timeout is 10s by default). Fargate allows at most 120."
  type        = number
  default     = 30

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "stop_timeout must be from 2 to 120 seconds (the Fargate maximum)."
  }
}

################################################################################
# Controller behaviour
################################################################################

variable "leader_election" {
  description = "Run the controller with leader election. Off (the default), ECS stops the old task before starting a new one so two never reconcile at once; on, rolling deployments overlap safely."
  type        = bool
  default     = false
}

variable "leader_election_namespace" {
  description = "Namespace of the control plane in which the leader election Lease lives."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.leader_election_namespace)) && length(var.leader_election_namespace) <= 63
    error_message = "leader_election_namespace must be a Kubernetes namespace name."
  }
}

variable "api_group" {
  description = "API group of the Robot resources to watch: auto, dummy.crossplane.io or dummy.upbound.io."
  type        = string
  default     = "auto"

  validation {
    condition     = contains(["auto", "dummy.crossplane.io", "dummy.upbound.io"], var.api_group)
    error_message = "api_group must be auto, dummy.crossplane.io or dummy.upbound.io."
  }
}

variable "controller_log_filter" {
  description = "Log filter of the controller (tracing EnvFilter syntax)."
  type        = string
  default     = "info"
}

variable "server_log_filter" {
  description = "Log filter of the server (tracing EnvFilter syntax)."
  type        = string
  default     = "info"
}

################################################################################
# Controller runtime and Lambda mode
################################################################################

variable "controller_runtime" {
  description = "How the controller runs: \"ecs\" (an ECS service with one task, watching all the time) or \"lambda\" (the `bootstrap` binary on provided.al2023 in the private subnets, one pass per EventBridge Scheduler tick, no ECS service). The controller task definition exists either way, for one-shot `run-task` passes."
  type        = string
  default     = "ecs"

  validation {
    condition     = contains(["ecs", "lambda"], var.controller_runtime)
    error_message = "controller_runtime must be \"ecs\" or \"lambda\"."
  }
}

variable "lambda_package_path" {
  description = "Path of the Lambda zip holding the `bootstrap` binary (from `cargo lambda build --release --output-format zip`). Required when controller_runtime is \"lambda\"."
  type        = string
  default     = null

  validation {
    condition     = var.controller_runtime != "lambda" || (var.lambda_package_path != null && endswith(coalesce(var.lambda_package_path, "-"), ".zip"))
    error_message = "lambda_package_path must be the path of a .zip file when controller_runtime is \"lambda\"."
  }
}

variable "lambda_architecture" {
  description = "Architecture the Lambda package was built for: arm64 or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "lambda_schedule_expression" {
  description = "EventBridge Scheduler expression that triggers a pass, e.g. rate(5 minutes) or cron(0/10 * * * ? *)."
  type        = string
  default     = "rate(5 minutes)"

  validation {
    condition     = can(regex("^(rate|cron|at)\\(.+\\)$", var.lambda_schedule_expression))
    error_message = "lambda_schedule_expression must be a rate(...), cron(...) or at(...) expression."
  }
}

variable "lambda_timeout" {
  description = "Seconds one Lambda pass may run."
  type        = number
  default     = 300

  validation {
    condition     = var.lambda_timeout >= 10 && var.lambda_timeout <= 900
    error_message = "lambda_timeout must be from 10 to 900 seconds."
  }
}

variable "lambda_memory_size" {
  description = "Memory (MB) of the Lambda function."
  type        = number
  default     = 256

  validation {
    condition     = var.lambda_memory_size >= 128 && var.lambda_memory_size <= 10240
    error_message = "lambda_memory_size must be from 128 to 10240 MB."
  }
}
