locals {
  # Ports of docs/contract: the server's container port (Cloud Run passes
  # it as PORT), the controller's health port (/healthz, /readyz).
  server_port = 9090
  health_port = 8080

  use_worker_pool = var.controller_runtime == "worker-pool"
  use_service     = var.controller_runtime == "service"
  use_connector   = var.vpc_egress == "connector"

  network_name = var.create_network ? google_compute_network.this[0].name : var.network_name
  subnet_name  = var.create_network ? google_compute_subnetwork.this[0].name : var.subnet_name
  connector_id = local.use_connector ? google_vpc_access_connector.this[0].id : null

  secret_id       = coalesce(var.kubeconfig_secret_id, "${var.name}-kubeconfig")
  secret_resource = var.create_kubeconfig_secret ? google_secret_manager_secret.kubeconfig[0].id : "projects/${var.project_id}/secrets/${local.secret_id}"

  server_url = google_cloud_run_v2_service.server.uri

  kubeconfig_source = "gcp-secretmanager://projects/${var.project_id}/secrets/${local.secret_id}/versions/latest"

  # The Upbound robot token: a secret of its own, only when one is given.
  use_upbound_token     = var.upbound_token_version != null
  upbound_token_id      = "${var.name}-upbound-token"
  upbound_token_source  = "gcp-secretmanager://projects/${var.project_id}/secrets/${local.upbound_token_id}/versions/latest"
  upbound_token_setting = local.use_upbound_token ? { ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE = local.upbound_token_source } : {}

  # APIs a fresh project has off. Cloud Resource Manager and Service Usage
  # first: enabling and reading the others goes through them.
  base_apis = ["cloudresourcemanager.googleapis.com", "serviceusage.googleapis.com"]
  apis = concat(
    ["compute.googleapis.com", "iam.googleapis.com", "run.googleapis.com", "secretmanager.googleapis.com"],
    local.use_connector ? ["vpcaccess.googleapis.com"] : [],
  )

  # Direct VPC egress can take a while to carry traffic after an instance
  # starts: the controller only counts as started once /readyz says it
  # reached the control plane (through the VPC and Cloud NAT), for up to
  # 5 minutes. Through the connector, /healthz (the process is up) is enough.
  startup_path              = local.use_connector ? "/healthz" : "/readyz"
  startup_failure_threshold = local.use_connector ? 3 : 30

  controller_settings = merge({
    ROBOT_CONTROLLER_KUBECONFIG_SOURCE = local.kubeconfig_source
    # The controller only calls robot servers listed here; the same URL
    # goes in the ProviderConfig's spec.endpoint.
    ROBOT_CONTROLLER_ALLOWED_ENDPOINTS = local.server_url
    # The server is private (run.invoker): the controller presents an ID
    # token of its own service account.
    ROBOT_CONTROLLER_SERVER_AUTH               = "gcp-id-token"
    ROBOT_CONTROLLER_API_GROUP                 = var.api_group
    ROBOT_CONTROLLER_LEADER_ELECTION           = tostring(var.leader_election)
    ROBOT_CONTROLLER_LEADER_ELECTION_NAMESPACE = var.leader_election_namespace
    ROBOT_CONTROLLER_LOG_FORMAT                = "json"
    ROBOT_CONTROLLER_LOG                       = var.controller_log_filter
  }, local.upbound_token_setting)
  server_settings = {
    # No bearer token: Cloud Run IAM is the server's authentication. Its
    # ingress is internal and only the controller's account holds
    # run.invoker (an ID token checked by Google before a request reaches
    # the container), so the server's own token check is turned off.
    ROBOT_SERVER_NO_AUTH    = "true"
    ROBOT_SERVER_LOG_FORMAT = "json"
    ROBOT_SERVER_LOG        = var.server_log_filter
  }

  # gcloud's alternative delimiter (see `gcloud topic escaping`) keeps
  # commas inside values intact.
  controller_env_flag = "'^@^${join("@", [for k in sort(keys(local.controller_settings)) : "${k}=${local.controller_settings[k]}"])}'"
  server_env_flag     = "'^@^${join("@", [for k in sort(keys(local.server_settings)) : "${k}=${local.server_settings[k]}"])}'"
  vpc_flags = local.use_connector ? (
    "--vpc-connector=${local.connector_id} --vpc-egress=all-traffic"
    ) : (
    "--network=${local.network_name} --subnet=${local.subnet_name} --vpc-egress=all-traffic"
  )
}

################################################################################
# APIs: a fresh project has none of them on
################################################################################

resource "google_project_service" "base" {
  for_each = var.enable_apis ? toset(local.base_apis) : toset([])

  project = var.project_id
  service = each.value
  # Other things in the project may use them: never turned off by destroy.
  disable_on_destroy = false
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false

  depends_on = [google_project_service.base]
}

################################################################################
# Service accounts: one per program, no project-level roles
################################################################################

resource "google_service_account" "server" {
  project      = var.project_id
  account_id   = "${var.name}-server"
  display_name = "robot-server (${var.name})"
  description  = "Runs robot-server; holds no roles."

  depends_on = [google_project_service.this]
}

resource "google_service_account" "controller" {
  project      = var.project_id
  account_id   = "${var.name}-controller"
  display_name = "robot-controller (${var.name})"
  description  = "Runs robot-controller; reads the kubeconfig secret and invokes the robot server, nothing else."

  depends_on = [google_project_service.this]
}

################################################################################
# Kubeconfig secret
################################################################################

resource "google_secret_manager_secret" "kubeconfig" {
  count = var.create_kubeconfig_secret ? 1 : 0

  project   = var.project_id
  secret_id = local.secret_id
  labels    = var.labels

  replication {
    dynamic "auto" {
      for_each = length(var.secret_replica_locations) == 0 ? [1] : []
      content {
        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }

    dynamic "user_managed" {
      for_each = length(var.secret_replica_locations) == 0 ? [] : [1]
      content {
        dynamic "replicas" {
          for_each = var.secret_replica_locations
          content {
            location = replicas.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "kubeconfig" {
  count = var.create_kubeconfig_secret && var.kubeconfig_version != null ? 1 : 0

  secret = google_secret_manager_secret.kubeconfig[0].id
  # Write-only: the value goes to Secret Manager, never into the plan or
  # the state. The empty fallback only lets `destroy` run without it; the
  # precondition stops any write of it.
  secret_data_wo         = var.kubeconfig == null ? "" : var.kubeconfig
  secret_data_wo_version = var.kubeconfig_version
  # A rotation (kubeconfig_version bumped) replaces this version: the new
  # one is written first, then the old one is disabled, not destroyed, so
  # versions/latest never points at nothing and a rollback is
  # `gcloud secrets versions enable`.
  deletion_policy = "DISABLE"

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.kubeconfig != null && trimspace(coalesce(var.kubeconfig, " ")) != ""
      error_message = "kubeconfig_version is set, so kubeconfig must hold the kubeconfig to write (e.g. TF_VAR_kubeconfig=\"$(cat kubeconfig)\")."
    }
  }

  depends_on = [google_project_service.this]
}

# The controller's account, on this one secret only. Cloud Run checks
# access when it deploys, so the controller waits for this grant.
resource "google_secret_manager_secret_iam_member" "controller_reads_kubeconfig" {
  project   = var.project_id
  secret_id = local.secret_resource
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.controller.member

  depends_on = [google_project_service.this]
}

################################################################################
# Upbound robot token (optional): for Upbound Cloud control planes
################################################################################

resource "google_secret_manager_secret" "upbound_token" {
  count = local.use_upbound_token ? 1 : 0

  project   = var.project_id
  secret_id = local.upbound_token_id
  labels    = var.labels

  replication {
    dynamic "auto" {
      for_each = length(var.secret_replica_locations) == 0 ? [1] : []
      content {
        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }

    dynamic "user_managed" {
      for_each = length(var.secret_replica_locations) == 0 ? [] : [1]
      content {
        dynamic "replicas" {
          for_each = var.secret_replica_locations
          content {
            location = replicas.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "upbound_token" {
  count = local.use_upbound_token ? 1 : 0

  secret = google_secret_manager_secret.upbound_token[0].id
  # Write-only, like the kubeconfig: never in the plan or the state.
  secret_data_wo         = var.upbound_token == null ? "" : var.upbound_token
  secret_data_wo_version = var.upbound_token_version
  # New version first, the old one disabled (see the kubeconfig's).
  deletion_policy = "DISABLE"

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.upbound_token != null && trimspace(coalesce(var.upbound_token, " ")) != ""
      error_message = "upbound_token_version is set, so upbound_token must hold the Upbound robot token (e.g. TF_VAR_upbound_token=\"$(cat token)\")."
    }
  }
}

# The controller's account, on this one secret only.
resource "google_secret_manager_secret_iam_member" "controller_reads_upbound_token" {
  count = local.use_upbound_token ? 1 : 0

  project   = var.project_id
  secret_id = google_secret_manager_secret.upbound_token[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.controller.member
}

################################################################################
# Network: the controller's egress goes through the VPC and out by NAT
################################################################################

resource "google_compute_network" "this" {
  count = var.create_network ? 1 : 0

  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.this]
}

# Nothing in this network accepts connections from outside it: say so
# explicitly (and log it) rather than rely on the implied rule. The
# connector's own rules, which Google creates, take precedence.
resource "google_compute_firewall" "deny_ingress" {
  count = var.create_network ? 1 : 0

  project     = var.project_id
  name        = "${var.name}-deny-ingress"
  network     = google_compute_network.this[0].name
  description = "Deny all ingress not allowed by a higher-priority rule"
  direction   = "INGRESS"
  priority    = 65534

  source_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }

  depends_on = [google_project_service.this]
}

resource "google_compute_subnetwork" "this" {
  count = var.create_network ? 1 : 0

  project       = var.project_id
  name          = "${var.name}-egress"
  region        = var.region
  network       = google_compute_network.this[0].id
  ip_cidr_range = var.subnet_cidr
  # Google APIs (Secret Manager, the run.app URL of the internal server)
  # without leaving Google's network.
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }

  depends_on = [google_project_service.this]
}

resource "google_vpc_access_connector" "this" {
  count = local.use_connector ? 1 : 0

  project       = var.project_id
  name          = "${var.name}-conn"
  region        = var.region
  machine_type  = var.connector_machine_type
  min_instances = var.connector_min_instances
  max_instances = var.connector_max_instances

  subnet {
    name       = local.subnet_name
    project_id = var.project_id
  }

  depends_on = [google_project_service.this]
}

resource "google_compute_router" "this" {
  count = var.create_nat ? 1 : 0

  project = var.project_id
  name    = "${var.name}-router"
  region  = var.region
  network = local.network_name

  depends_on = [google_project_service.this]
}

resource "google_compute_router_nat" "this" {
  count = var.create_nat ? 1 : 0

  project                            = var.project_id
  name                               = "${var.name}-nat"
  region                             = var.region
  router                             = google_compute_router.this[0].name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = local.subnet_name
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }

  depends_on = [google_project_service.this]
}

################################################################################
# robot-server: internal-only Cloud Run service, one instance
################################################################################

resource "google_cloud_run_v2_service" "server" {
  project             = var.project_id
  name                = "${var.name}-server"
  location            = var.region
  description         = "robot-server: the internal robot API"
  labels              = var.labels
  deletion_protection = var.deletion_protection
  # Reached from inside the VPC only (the controller's egress goes through it).
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  template {
    service_account = google_service_account.server.email

    # Its state is in memory: exactly one instance.
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }

    containers {
      name  = "server"
      image = var.server_image

      # Cloud Run passes this port as PORT, on which the server listens.
      ports {
        container_port = local.server_port
      }

      dynamic "env" {
        for_each = local.server_settings
        content {
          name  = env.key
          value = env.value
        }
      }

      resources {
        limits = {
          cpu    = var.server_cpu
          memory = var.server_memory
        }
        # It works only while answering requests.
        cpu_idle = true
      }

      startup_probe {
        http_get {
          path = "/readyz"
        }
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [google_project_service.this]
}

# The controller's account is the only invoker.
resource "google_cloud_run_v2_service_iam_member" "server_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.server.name
  role     = "roles/run.invoker"
  member   = google_service_account.controller.member

  depends_on = [google_project_service.this]
}

################################################################################
# robot-controller: a worker pool (default) or a service, one instance
################################################################################

resource "google_cloud_run_v2_worker_pool" "controller" {
  count = local.use_worker_pool ? 1 : 0

  project             = var.project_id
  name                = "${var.name}-controller"
  location            = var.region
  description         = "robot-controller: reconciles Robots from the control plane"
  labels              = var.labels
  deletion_protection = var.deletion_protection

  # One instance: two controllers would reconcile the same Robots. No
  # scaling_mode: a worker pool has no such field in the Cloud Run API
  # (provider issue #26525), and setting it showed a change on every plan
  # with provider 7.5 to 7.17 (#25580).
  scaling {
    manual_instance_count = 1
  }

  template {
    service_account = google_service_account.controller.email

    vpc_access {
      connector = local.connector_id
      egress    = "ALL_TRAFFIC"

      dynamic "network_interfaces" {
        for_each = local.use_connector ? [] : [1]
        content {
          network    = local.network_name
          subnetwork = local.subnet_name
        }
      }
    }

    containers {
      name  = "controller"
      image = var.controller_image

      dynamic "env" {
        for_each = local.controller_settings
        content {
          name  = env.key
          value = env.value
        }
      }

      resources {
        limits = {
          cpu    = var.controller_cpu
          memory = var.controller_memory
        }
      }

      startup_probe {
        period_seconds    = 10
        failure_threshold = local.startup_failure_threshold
        http_get {
          path = local.startup_path
          port = local.health_port
        }
      }

      liveness_probe {
        http_get {
          path = "/healthz"
          port = local.health_port
        }
      }
    }
  }

  depends_on = [
    google_project_service.this,
    google_secret_manager_secret_iam_member.controller_reads_kubeconfig,
    google_secret_manager_secret_iam_member.controller_reads_upbound_token,
    # It cannot start before its secrets hold a version.
    google_secret_manager_secret_version.kubeconfig,
    google_secret_manager_secret_version.upbound_token,
    google_cloud_run_v2_service_iam_member.server_invoker,
    google_compute_router_nat.this,
  ]
}

resource "google_cloud_run_v2_service" "controller" {
  count = local.use_service ? 1 : 0

  project             = var.project_id
  name                = "${var.name}-controller"
  location            = var.region
  description         = "robot-controller: reconciles Robots from the control plane"
  labels              = var.labels
  deletion_protection = var.deletion_protection
  # Nothing calls it; its port only answers Cloud Run's probes.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  template {
    service_account = google_service_account.controller.email

    # One instance, always on: two controllers would reconcile the same Robots.
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }

    vpc_access {
      connector = local.connector_id
      egress    = "ALL_TRAFFIC"

      dynamic "network_interfaces" {
        for_each = local.use_connector ? [] : [1]
        content {
          network    = local.network_name
          subnetwork = local.subnet_name
        }
      }
    }

    containers {
      name  = "controller"
      image = var.controller_image

      # Cloud Run passes it as PORT, which the health listener honours.
      ports {
        container_port = local.health_port
      }

      dynamic "env" {
        for_each = local.controller_settings
        content {
          name  = env.key
          value = env.value
        }
      }

      resources {
        limits = {
          cpu    = var.controller_cpu
          memory = var.controller_memory
        }
        # It works between requests (watching, polling): CPU always allocated.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      startup_probe {
        period_seconds    = 10
        failure_threshold = local.startup_failure_threshold
        http_get {
          path = local.startup_path
        }
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [
    google_project_service.this,
    google_secret_manager_secret_iam_member.controller_reads_kubeconfig,
    google_secret_manager_secret_iam_member.controller_reads_upbound_token,
    # It cannot start before its secrets hold a version.
    google_secret_manager_secret_version.kubeconfig,
    google_secret_manager_secret_version.upbound_token,
    google_cloud_run_v2_service_iam_member.server_invoker,
    google_compute_router_nat.this,
  ]
}
