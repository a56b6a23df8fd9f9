provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    project    = "robot-byoc"
    managed-by = "terraform"
  }
}

module "robot_byoc" {
  source = "../../modules/gcp"

  project_id          = var.project_id
  region              = var.region
  name                = var.name
  server_image        = var.server_image
  controller_image    = var.controller_image
  controller_runtime  = var.controller_runtime
  kubeconfig          = var.kubeconfig
  kubeconfig_version  = var.kubeconfig_version
  deletion_protection = var.deletion_protection
}
