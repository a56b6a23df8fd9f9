terraform {
  # 1.11: write-only attributes keep the kubeconfig and the Upbound token
  # out of the state.
  required_version = ">= 1.11"

  required_providers {
    # 7.5 is the first release whose google_cloud_run_v2_worker_pool takes
    # startup_probe and liveness_probe (the controller's /healthz and
    # /readyz). Everything else the module uses is older: write-only
    # secret_data_wo (6.23), the worker pool itself (6.37), its
    # vpc_access.connector (7.3), deletion_policy on secret versions.
    # The scaling_mode permadiff fixed in 7.18 (#25580) does not apply:
    # the module no longer sets scaling_mode.
    google = {
      source  = "hashicorp/google"
      version = ">= 7.5, < 8.0"
    }
  }
}
