# Each resource here breaks one or more of the custom policies beside this
# directory: `cargo xtask ci --only checkov` requires every CKV2_ROBOT_*
# policy to fail on this file, and leaves the directory out of the scan of
# terraform/. Never applied.

resource "google_service_account" "sa" {
  account_id = "sa"
}

# 1, 2, 8: public ingress, two instances, deletion protection left out.
resource "google_cloud_run_v2_service" "public" {
  name     = "x-server"
  location = "europe-west1"
  ingress  = "INGRESS_TRAFFIC_ALL"

  template {
    service_account = google_service_account.sa.email
    scaling {
      min_instance_count = 1
      max_instance_count = 2
    }
    containers {
      image = "x"
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }
}

# 4, 5, 6, 7, 9: a controller service with private-ranges egress, CPU
# throttled, probing /, running as the default account, not waiting.
resource "google_cloud_run_v2_service" "controller" {
  name                = "x-controller"
  location            = "europe-west1"
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = true

  template {
    service_account = "123-compute@developer.gserviceaccount.com"
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
    }
    containers {
      image = "x"
      resources {
        cpu_idle = true
      }
      liveness_probe {
        http_get {
          path = "/"
        }
      }
    }
  }
}

# 3: a scaling mode, two instances.
resource "google_cloud_run_v2_worker_pool" "pool" {
  name                = "x-controller"
  location            = "europe-west1"
  deletion_protection = true

  scaling {
    scaling_mode          = "MANUAL"
    manual_instance_count = 2
  }

  template {
    service_account = google_service_account.sa.email
    vpc_access {
      egress = "ALL_TRAFFIC"
    }
    containers {
      image = "x"
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.public]
}

# 10: project-level IAM.
resource "google_project_iam_member" "broad" {
  project = "p"
  role    = "roles/editor"
  member  = "serviceAccount:${google_service_account.sa.email}"
}

# 11, 12, 13: the world, owner of a secret.
resource "google_secret_manager_secret_iam_member" "public" {
  secret_id = "projects/p/secrets/s"
  role      = "roles/secretmanager.admin"
  member    = "allUsers"
}

# 14: a rotation that destroys the old version first.
resource "google_secret_manager_secret_version" "destroyed" {
  secret          = "projects/p/secrets/s"
  secret_data_wo  = "x"
  deletion_policy = "DELETE"
}

# 15: an API turned off by destroy.
resource "google_project_service" "off" {
  project            = "p"
  service            = "run.googleapis.com"
  disable_on_destroy = true
}

# 16: an unbounded connector.
resource "google_vpc_access_connector" "unbounded" {
  name          = "x"
  region        = "europe-west1"
  ip_cidr_range = "10.8.0.0/28"
  network       = "default"
}
