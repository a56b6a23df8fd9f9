terraform {
  # 1.11: write-only attributes keep the kubeconfig out of the state.
  required_version = ">= 1.11"

  required_providers {
    # 7.x: google_cloud_run_v2_worker_pool with a VPC connector, and
    # write-only secret versions.
    google = {
      source  = "hashicorp/google"
      version = ">= 7.5, < 8.0"
    }
  }
}
