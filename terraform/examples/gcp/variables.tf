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
  description = "Set (and bump to rotate) to write `kubeconfig` as a new secret version; null writes nothing."
  type        = number
  default     = null
}

variable "deletion_protection" {
  description = "Protect the Cloud Run resources from destroy. Off in this example so `terraform destroy` works; turn it on for anything you keep."
  type        = bool
  default     = false
}
