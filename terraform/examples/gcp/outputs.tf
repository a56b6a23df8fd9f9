output "server_url" {
  description = "Put this URL in the ProviderConfig's spec.endpoint."
  value       = module.robot_byoc.server_url
}

output "kubeconfig_secret_id" {
  description = "Secret to add the kubeconfig to (gcloud secrets versions add), unless passed as `kubeconfig`."
  value       = module.robot_byoc.kubeconfig_secret_id
}

output "controller_name" {
  description = "Worker pool or service running the controller."
  value       = module.robot_byoc.controller_name
}

output "gcloud_server_deploy_command" {
  description = "Equivalent gcloud command for the server."
  value       = module.robot_byoc.gcloud_server_deploy_command
}

output "gcloud_controller_deploy_command" {
  description = "Equivalent gcloud command for the controller."
  value       = module.robot_byoc.gcloud_controller_deploy_command
}
