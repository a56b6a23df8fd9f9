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

  # Connector (a /28) or Direct VPC egress (a /26 or larger): see the
  # module's README for when to pick which.
  vpc_egress  = var.vpc_egress
  subnet_cidr = var.subnet_cidr
  enable_apis = var.enable_apis

  upbound_token         = var.upbound_token
  upbound_token_version = var.upbound_token_version
}
