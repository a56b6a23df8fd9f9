################################################################################
# Project, naming and images
################################################################################

variable "project_id" {
  description = "ID of the project to deploy into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 lowercase letters, digits and hyphens, starting with a letter)."
  }
}

variable "region" {
  description = "Region of the Cloud Run resources, the connector, the router and the NAT."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1."
  }
}

variable "name" {
  description = "Prefix of every resource name. Short, because service account IDs (name + \"-controller\") are limited to 30 characters."
  type        = string
  default     = "robot-byoc"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,17}[a-z0-9]$", var.name))
    error_message = "name must be 2-19 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "server_image" {
  description = "Container image of robot-server (Artifact Registry URI with a tag or digest). No default: there is no public image to point at."
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

variable "enable_apis" {
  description = "Turn on the APIs the module uses (Cloud Resource Manager, Service Usage, Compute, IAM, Cloud Run, Secret Manager, and Serverless VPC Access with the connector). A fresh project has them off. Set false where a central team enables APIs; they are never turned off on destroy."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the Cloud Run service(s) and worker pool from `terraform destroy`. Examples turn it off so they can be torn down."
  type        = bool
  default     = true
}

################################################################################
# Controller runtime
################################################################################

variable "controller_runtime" {
  description = "How the controller runs: \"worker-pool\" (a Cloud Run worker pool, no port, manual scaling, one instance) or \"service\" (a Cloud Run service with min and max one instance, CPU always allocated, probes on /healthz)."
  type        = string
  default     = "worker-pool"

  validation {
    condition     = contains(["worker-pool", "service"], var.controller_runtime)
    error_message = "controller_runtime must be \"worker-pool\" or \"service\"."
  }
}

variable "leader_election" {
  description = "Run the controller with leader election (a Lease in the control plane)."
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

variable "controller_cpu" {
  description = "CPU limit of the controller container (Cloud Run accepts 1, 2, 4, 6 or 8)."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.controller_cpu)
    error_message = "controller_cpu must be \"1\", \"2\", \"4\", \"6\" or \"8\"."
  }
}

variable "controller_memory" {
  description = "Memory limit of the controller container, e.g. 512Mi."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.controller_memory))
    error_message = "controller_memory must be a quantity in Mi or Gi, e.g. 512Mi."
  }
}

variable "server_cpu" {
  description = "CPU limit of the server container (Cloud Run accepts 1, 2, 4, 6 or 8)."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.server_cpu)
    error_message = "server_cpu must be \"1\", \"2\", \"4\", \"6\" or \"8\"."
  }
}

variable "server_memory" {
  description = "Memory limit of the server container, e.g. 512Mi."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.server_memory))
    error_message = "server_memory must be a quantity in Mi or Gi, e.g. 512Mi."
  }
}

################################################################################
# Kubeconfig secret
################################################################################

variable "create_kubeconfig_secret" {
  description = "Create the Secret Manager secret that holds the control plane kubeconfig. When false, pass kubeconfig_secret_id of an existing secret in the same project."
  type        = bool
  default     = true
}

variable "kubeconfig_secret_id" {
  description = "Secret ID (short name) of the kubeconfig secret: the name of the created one, or of the existing one when create_kubeconfig_secret is false. Null names it <name>-kubeconfig."
  type        = string
  default     = null

  validation {
    condition     = var.kubeconfig_secret_id == null || can(regex("^[A-Za-z0-9_-]{1,255}$", coalesce(var.kubeconfig_secret_id, "-")))
    error_message = "kubeconfig_secret_id must be a secret ID (letters, digits, - and _), not a full resource name."
  }

  validation {
    condition     = var.create_kubeconfig_secret || var.kubeconfig_secret_id != null
    error_message = "kubeconfig_secret_id is required when create_kubeconfig_secret is false."
  }
}

variable "kubeconfig" {
  description = "Kubeconfig to store as a secret version. Ephemeral and written through a write-only attribute, so it never lands in the plan or state. Leave null and run `gcloud secrets versions add` instead if you prefer."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "kubeconfig_version" {
  description = "Set (and bump to rotate) to write `kubeconfig` as a new secret version; null writes nothing. While set, every plan needs `kubeconfig`."
  type        = number
  default     = null

  validation {
    condition     = var.kubeconfig_version == null || (try(var.kubeconfig_version >= 1, false) && var.create_kubeconfig_secret)
    error_message = "kubeconfig_version must be a positive number, and only applies when create_kubeconfig_secret is true."
  }

  # Cloud Run deploys the controller, and waits for it to start, in the
  # same apply that creates the secret: without a version it cannot start
  # and the apply fails.
  validation {
    condition     = var.kubeconfig_version != null || !var.create_kubeconfig_secret
    error_message = "kubeconfig_version (and kubeconfig) must be set when the module creates the kubeconfig secret: the controller cannot start from an empty secret. To fill the secret yourself, create it first and pass create_kubeconfig_secret = false with kubeconfig_secret_id."
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
  description = "Set (and bump to rotate) to store `upbound_token` in the secret <name>-upbound-token, grant the controller read access to it and give it ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE; null: no Upbound token. While set, every plan needs `upbound_token`."
  type        = number
  default     = null

  validation {
    condition     = var.upbound_token_version == null || try(var.upbound_token_version >= 1, false)
    error_message = "upbound_token_version must be a positive number."
  }
}

variable "secret_replica_locations" {
  description = "Locations of user-managed replicas of the created secret. Empty uses automatic replication."
  type        = list(string)
  default     = []
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/.../cryptoKeys/...) that encrypts the created secret (automatic replication only). The Secret Manager service agent needs Encrypter/Decrypter on it. Null uses Google-managed encryption."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", coalesce(var.kms_key_name, "-")))
    error_message = "kms_key_name must be projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>."
  }
}

################################################################################
# Network
################################################################################

variable "vpc_egress" {
  description = "How the controller reaches the VPC: \"connector\" (Serverless VPC Access connector, a /28 subnet) or \"direct\" (Direct VPC egress through a /26 or larger subnet; the controller then counts as started only once /readyz says it reached the control plane). Either way all its traffic (ALL_TRAFFIC) goes through the VPC, so its calls to the internal-only server count as internal and its calls to the control plane leave through Cloud NAT."
  type        = string
  default     = "connector"

  validation {
    condition     = contains(["connector", "direct"], var.vpc_egress)
    error_message = "vpc_egress must be \"connector\" or \"direct\"."
  }
}

variable "create_network" {
  description = "Create a VPC network and a subnet for the controller's egress. When false, pass network_name and subnet_name."
  type        = bool
  default     = true
}

variable "network_name" {
  description = "Name of an existing VPC network (when create_network is false)."
  type        = string
  default     = null

  validation {
    condition     = var.create_network || var.network_name != null
    error_message = "network_name is required when create_network is false."
  }
}

variable "subnet_name" {
  description = "Name of an existing subnet in region (when create_network is false): a /28 dedicated to the connector, or a /26 or larger for Direct VPC egress. It needs Private Google Access."
  type        = string
  default     = null

  validation {
    condition     = var.create_network || var.subnet_name != null
    error_message = "subnet_name is required when create_network is false."
  }
}

variable "subnet_cidr" {
  description = "CIDR of the created subnet: exactly a /28 for the connector (Serverless VPC Access takes no other size); a /26 or larger for Direct VPC egress, which takes its addresses from it."
  type        = string
  default     = "10.8.0.0/28"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR block."
  }

  validation {
    condition     = !var.create_network || var.vpc_egress != "direct" || try(tonumber(split("/", var.subnet_cidr)[1]) <= 26, false)
    error_message = "vpc_egress = \"direct\" needs a subnet of /26 or larger (Direct VPC egress takes instance addresses from it; Google's minimum is /26): set subnet_cidr, e.g. 10.8.0.0/26."
  }

  validation {
    condition     = !var.create_network || var.vpc_egress != "connector" || try(tonumber(split("/", var.subnet_cidr)[1]) == 28, false)
    error_message = "vpc_egress = \"connector\" needs subnet_cidr to be a /28: a Serverless VPC Access connector takes no other size."
  }
}

variable "create_nat" {
  description = "Create a Cloud Router and Cloud NAT for the subnet, so the controller reaches the control plane outbound. Turn off when the network already has NAT."
  type        = bool
  default     = true
}

variable "connector_min_instances" {
  description = "Minimum instances of the Serverless VPC Access connector."
  type        = number
  default     = 2

  validation {
    condition     = var.connector_min_instances >= 2 && var.connector_min_instances <= 9
    error_message = "connector_min_instances must be from 2 to 9."
  }
}

variable "connector_max_instances" {
  description = "Maximum instances of the Serverless VPC Access connector (it never scales back down, so keep it small)."
  type        = number
  default     = 3

  validation {
    condition     = var.connector_max_instances >= 3 && var.connector_max_instances <= 10 && var.connector_max_instances > var.connector_min_instances
    error_message = "connector_max_instances must be from 3 to 10 and above connector_min_instances."
  }
}

variable "connector_machine_type" {
  description = "Machine type of the connector instances."
  type        = string
  default     = "e2-micro"

  validation {
    condition     = contains(["f1-micro", "e2-micro", "e2-standard-4"], var.connector_machine_type)
    error_message = "connector_machine_type must be f1-micro, e2-micro or e2-standard-4."
  }
}
