output "server_url" {
  description = "URL of the robot server inside the VPC. Put the same URL in the ProviderConfig's spec.endpoint: the controller only calls the endpoints listed in ROBOT_CONTROLLER_ALLOWED_ENDPOINTS, which is this."
  value       = local.server_url
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "server_service_name" {
  description = "Name of the ECS service running robot-server."
  value       = aws_ecs_service.server.name
}

output "controller_service_name" {
  description = "Name of the ECS service running robot-controller (null when controller_runtime is \"lambda\")."
  value       = try(aws_ecs_service.controller[0].name, null)
}

output "controller_runtime" {
  description = "How the controller runs: ecs or lambda."
  value       = var.controller_runtime
}

output "server_task_definition_arn" {
  description = "ARN (with revision) of the server task definition."
  value       = aws_ecs_task_definition.server.arn
}

output "controller_task_definition_arn" {
  description = "ARN (with revision) of the controller task definition."
  value       = aws_ecs_task_definition.controller.arn
}

output "ecs_run_task_command" {
  description = "`aws ecs run-task` command for a one-shot controller pass (`robot-controller once`) with the controller's network settings. Scale the controller service to 0 (or disable the Lambda schedule) first unless leader election is on."
  value = join(" ", [
    "aws ecs run-task",
    "--region ${local.region}",
    "--cluster ${aws_ecs_cluster.this.name}",
    "--task-definition ${aws_ecs_task_definition.controller.arn}",
    "--launch-type FARGATE",
    "--started-by robot-byoc-once",
    "--network-configuration '${local.run_task_network}'",
    "--overrides '${local.run_task_overrides}'",
  ])
}

output "kubeconfig_secret_arn" {
  description = "ARN of the secret holding the kubeconfig."
  value       = local.kubeconfig_secret_arn
}

output "kubeconfig_source" {
  description = "Value of ROBOT_CONTROLLER_KUBECONFIG_SOURCE given to the controller."
  value       = local.kubeconfig_source
}

output "controller_task_role_arn" {
  description = "ARN of the controller's task role (allowed to read its own secrets only: kubeconfig, server token, Upbound token)."
  value       = aws_iam_role.controller.arn
}

output "execution_role_arn" {
  description = "ARN of the task execution role (image pull, logs)."
  value       = aws_iam_role.execution.arn
}

output "server_security_group_id" {
  description = "Security group of the server tasks."
  value       = aws_security_group.server.id
}

output "controller_security_group_id" {
  description = "Security group of the controller tasks and Lambda."
  value       = aws_security_group.controller.id
}

output "vpc_id" {
  description = "ID of the VPC the tasks run in (created or given)."
  value       = local.vpc_id
}

output "private_subnet_ids" {
  description = "IDs of the private subnets the tasks run in (created or given)."
  value       = local.private_subnet_ids
}

output "service_discovery_namespace_id" {
  description = "ID of the Cloud Map private DNS namespace."
  value       = aws_service_discovery_private_dns_namespace.this.id
}

output "log_group_names" {
  description = "CloudWatch log groups of the server, the controller and (when enabled) the Lambda."
  value = {
    server     = aws_cloudwatch_log_group.server.name
    controller = aws_cloudwatch_log_group.controller.name
    lambda     = try(aws_cloudwatch_log_group.lambda[0].name, null)
  }
}

output "lambda_function_name" {
  description = "Name of the controller Lambda (null unless controller_runtime is \"lambda\")."
  value       = try(aws_lambda_function.controller[0].function_name, null)
}

output "lambda_schedule_arn" {
  description = "ARN of the EventBridge Scheduler schedule that invokes the Lambda (null unless controller_runtime is \"lambda\")."
  value       = try(aws_scheduler_schedule.controller[0].arn, null)
}

output "server_token_secret_arn" {
  description = "ARN of the secret holding the server's bearer token (ROBOT_SERVER_AUTH_TOKEN of the server, ROBOT_CONTROLLER_SERVER_TOKEN_SOURCE of the controller)."
  value       = local.server_token_arn
}

output "upbound_token_secret_arn" {
  description = "ARN of the secret holding the Upbound robot token (null unless upbound_token_version is set)."
  value       = local.upbound_token_arn
}
