output "server_url" {
  description = "URL of the internal robot server. Put the same URL in the ProviderConfig's spec.endpoint: the controller only calls the endpoints listed in ROBOT_CONTROLLER_ALLOWED_ENDPOINTS, which is this."
  value       = local.server_url
}

output "server_service_name" {
  description = "Name of the Cloud Run service running robot-server."
  value       = google_cloud_run_v2_service.server.name
}

output "controller_name" {
  description = "Name of the Cloud Run worker pool or service running robot-controller."
  value       = local.use_worker_pool ? google_cloud_run_v2_worker_pool.controller[0].name : google_cloud_run_v2_service.controller[0].name
}

output "controller_runtime" {
  description = "How the controller runs: worker-pool or service."
  value       = var.controller_runtime
}

output "kubeconfig_secret_id" {
  description = "Resource name of the kubeconfig secret (projects/<p>/secrets/<s>)."
  value       = local.secret_resource
}

output "kubeconfig_source" {
  description = "Value of ROBOT_CONTROLLER_KUBECONFIG_SOURCE given to the controller."
  value       = local.kubeconfig_source
}

output "server_service_account_email" {
  description = "Service account of the server (holds no roles)."
  value       = google_service_account.server.email
}

output "controller_service_account_email" {
  description = "Service account of the controller (secret accessor on the kubeconfig secret, invoker of the server)."
  value       = google_service_account.controller.email
}

output "vpc_connector_id" {
  description = "ID of the Serverless VPC Access connector (null with Direct VPC egress)."
  value       = local.connector_id
}

output "network_name" {
  description = "VPC network the controller's egress goes through."
  value       = local.network_name
}

output "gcloud_server_deploy_command" {
  description = "The `gcloud run deploy` command equivalent to the server service."
  value = join(" ", [
    "gcloud run deploy ${google_cloud_run_v2_service.server.name}",
    "--project=${var.project_id}",
    "--region=${var.region}",
    "--image=${var.server_image}",
    "--service-account=${google_service_account.server.email}",
    "--ingress=internal",
    "--no-allow-unauthenticated",
    "--port=${local.server_port}",
    "--min-instances=1",
    "--max-instances=1",
    "--cpu=${var.server_cpu}",
    "--memory=${var.server_memory}",
    "--set-env-vars=${local.server_env_flag}",
  ])
}

output "gcloud_controller_deploy_command" {
  description = "The `gcloud run worker-pools deploy` (or `gcloud run deploy`, with controller_runtime = service) command equivalent to the controller. Worker pools are GA in current gcloud; a gcloud from before that (such as 528) has them as `gcloud beta run worker-pools` only."
  value = local.use_worker_pool ? join(" ", [
    "gcloud run worker-pools deploy ${var.name}-controller",
    "--project=${var.project_id}",
    "--region=${var.region}",
    "--image=${var.controller_image}",
    "--service-account=${google_service_account.controller.email}",
    "--scaling=1",
    local.vpc_flags,
    "--cpu=${var.controller_cpu}",
    "--memory=${var.controller_memory}",
    "--set-env-vars=${local.controller_env_flag}",
    ]) : join(" ", [
    "gcloud run deploy ${var.name}-controller",
    "--project=${var.project_id}",
    "--region=${var.region}",
    "--image=${var.controller_image}",
    "--service-account=${google_service_account.controller.email}",
    "--ingress=internal",
    "--no-allow-unauthenticated",
    "--port=${local.health_port}",
    "--min-instances=1",
    "--max-instances=1",
    "--no-cpu-throttling",
    local.vpc_flags,
    "--startup-probe=httpGet.path=${local.startup_path},periodSeconds=10,failureThreshold=${local.startup_failure_threshold}",
    "--liveness-probe=httpGet.path=/healthz",
    "--cpu=${var.controller_cpu}",
    "--memory=${var.controller_memory}",
    "--set-env-vars=${local.controller_env_flag}",
  ])
}

output "upbound_token_secret_id" {
  description = "Secret ID of the Upbound robot token (null unless upbound_token_version is set)."
  value       = local.use_upbound_token ? local.upbound_token_id : null
}

output "enabled_apis" {
  description = "APIs the module turned on (empty with enable_apis = false)."
  value       = sort(concat(keys(google_project_service.base), keys(google_project_service.this)))
}
