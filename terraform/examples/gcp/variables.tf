variable "project_id" {
  description = "Project to deploy into."
  type        = string
}

variable "region" {
  description = "Region to deploy into."
  type        = string
  default     = "europe-west1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "robot-byoc"
}

variable "server_image" {
  description = "Container image of robot-server, e.g. <region>-docker.pkg.dev/<project>/<repo>/robot-server:<tag>."
  type        = string
}

variable "controller_image" {
  description = "Container image of robot-controller, e.g. <region>-docker.pkg.dev/<project>/<repo>/robot-controller:<tag>."
  type        = string
}

variable "controller_runtime" {
  description = "worker-pool (default) or service."
  type        = string
  default     = "worker-pool"
}

variable "kubeconfig" {
  description = "Kubeconfig for the control plane (ephemeral: never stored in state). Pass it with TF_VAR_kubeconfig=\"$(cat kubeconfig)\"."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "kubeconfig_version" {
  description = "Bump to rotate: writes `kubeconfig` as a new secret version (the old one is disabled, not destroyed)."
  type        = number
  default     = 1
}

variable "deletion_protection" {
  description = "Protect the Cloud Run resources from destroy. Off in this example so `terraform destroy` works; turn it on for anything you keep."
  type        = bool
  default     = false
}

variable "vpc_egress" {
  description = "connector (default: a Serverless VPC Access connector, Google's recommendation with Cloud NAT) or direct (Direct VPC egress: no connector instances, but longer cold starts; needs subnet_cidr /26 or larger)."
  type        = string
  default     = "connector"
}

variable "subnet_cidr" {
  description = "CIDR of the subnet: a /28 for the connector, a /26 or larger for direct."
  type        = string
  default     = "10.8.0.0/28"
}

variable "enable_apis" {
  description = "Turn on the APIs the module needs (off where a central team manages them)."
  type        = bool
  default     = true
}

variable "upbound_token" {
  description = "Upbound robot token, for an Upbound Cloud control plane (ephemeral). Pass it with TF_VAR_upbound_token and set upbound_token_version."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "upbound_token_version" {
  description = "Set (and bump to rotate) to store upbound_token; null: no Upbound token."
  type        = number
  default     = null
}
