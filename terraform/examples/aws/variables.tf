variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "robot-byoc"
}

variable "server_image" {
  description = "Container image of robot-server, e.g. <account>.dkr.ecr.<region>.amazonaws.com/robot-server:<tag>."
  type        = string
}

variable "controller_image" {
  description = "Container image of robot-controller, e.g. <account>.dkr.ecr.<region>.amazonaws.com/robot-controller:<tag>."
  type        = string
}

variable "kubeconfig" {
  description = "Kubeconfig for the control plane (ephemeral: never stored in state). Pass it with TF_VAR_kubeconfig=\"$(cat kubeconfig)\"."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "kubeconfig_version" {
  description = "Set (and bump to rotate) to write `kubeconfig` into the secret; null writes nothing."
  type        = number
  default     = null
}

variable "control_plane_cidr_blocks" {
  description = "CIDR blocks of the control plane's API server."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "control_plane_port" {
  description = "TCP port of the control plane's API server."
  type        = number
  default     = 443
}

variable "recovery_window_in_days" {
  description = "Recovery window of the kubeconfig secret. 0 (this example's default) deletes it at once so destroy and re-apply work; use 7-30 for anything you keep."
  type        = number
  default     = 0
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the example's KMS key is deleted after destroy."
  type        = number
  default     = 7
}

variable "controller_runtime" {
  description = "ecs (an ECS service, default) or lambda (scheduled passes; needs lambda_package_path)."
  type        = string
  default     = "ecs"
}

variable "lambda_package_path" {
  description = "Zip from `cargo lambda build --release --arm64 --output-format zip` (holds `bootstrap`)."
  type        = string
  default     = null
}
