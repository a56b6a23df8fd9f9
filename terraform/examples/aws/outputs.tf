output "server_url" {
  description = "Put this URL in the ProviderConfig's spec.endpoint."
  value       = module.robot_byoc.server_url
}

output "ecs_run_task_command" {
  description = "One-shot controller pass with the aws CLI."
  value       = module.robot_byoc.ecs_run_task_command
}

output "kubeconfig_secret_arn" {
  description = "Secret to put the kubeconfig in (aws secretsmanager put-secret-value), unless passed as `kubeconfig`."
  value       = module.robot_byoc.kubeconfig_secret_arn
}

output "cluster_name" {
  description = "ECS cluster."
  value       = module.robot_byoc.cluster_name
}

output "controller_service_name" {
  description = "ECS service of the controller."
  value       = module.robot_byoc.controller_service_name
}

output "server_service_name" {
  description = "ECS service of the server."
  value       = module.robot_byoc.server_service_name
}

output "controller_task_definition_arn" {
  description = "Task definition of the controller."
  value       = module.robot_byoc.controller_task_definition_arn
}

output "lambda_function_name" {
  description = "Controller Lambda (null unless controller_runtime is lambda)."
  value       = module.robot_byoc.lambda_function_name
}

output "server_token_secret_arn" {
  description = "Secret holding the server's bearer token (generated; rotate with server_token_version)."
  value       = module.robot_byoc.server_token_secret_arn
}

output "server_task_definition_arn" {
  description = "Task definition of the server."
  value       = module.robot_byoc.server_task_definition_arn
}

output "controller_task_role_arn" {
  description = "Task role of the controller (reads its secrets only)."
  value       = module.robot_byoc.controller_task_role_arn
}
