# The module applied for real against moto (a local AWS API emulator):
# what the plan cannot know (ARNs, the policies' JSON, the task
# definitions as the provider stores them) is asserted after each apply.
# Mock providers cannot stand in: they do not support the ephemeral
# aws_secretsmanager_random_password that generates the server token.
#
#   MOTO_IAM_LOAD_MANAGED_POLICIES=true moto_server -p 5000 &  # pip install 'moto[server]'
#   terraform init && AWS_ENDPOINT_URL=http://127.0.0.1:5000 terraform test
#
# The endpoint comes from AWS_ENDPOINT_URL, which the provider reads for
# every service: a test file's provider block cannot take it from -var.
#
# `cargo xtask ci --only terraform` starts moto and runs this file.

variables {
  name             = "robot-tftest"
  server_image     = "localhost/robot-server:tftest"
  controller_image = "localhost/robot-controller:tftest"
  kubeconfig       = "apiVersion: v1\nkind: Config\n"
  # Every ephemeral variable is set in every run: terraform test (1.11)
  # otherwise refuses the apply of an ephemeral variable left unset.
  # checkov:skip=CKV_SECRET_6:a placeholder for a test against moto, no secret
  upbound_token           = "not-a-real-token"
  kubeconfig_version      = 1
  recovery_window_in_days = 0
  enable_flow_log         = false
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true

}

run "ecs_service" {
  # The server gets its token from ECS, the controller the URI of the
  # same secret; each role may read exactly its secrets.
  assert {
    condition = jsondecode(aws_ecs_task_definition.server.container_definitions)[0].secrets == [
      { name = "ROBOT_SERVER_AUTH_TOKEN", valueFrom = aws_secretsmanager_secret.server_token.arn }
    ]
    error_message = "the server container does not get ROBOT_SERVER_AUTH_TOKEN from the token secret"
  }
  assert {
    condition     = local.controller_task_settings["ROBOT_CONTROLLER_SERVER_TOKEN_SOURCE"] == "aws-secretsmanager://${aws_secretsmanager_secret.server_token.arn}"
    error_message = "the controller's ROBOT_CONTROLLER_SERVER_TOKEN_SOURCE is not the token secret"
  }
  assert {
    condition     = local.controller_task_settings["ROBOT_CONTROLLER_SERVER_AUTH"] == "bearer"
    error_message = "the controller does not present the token"
  }
  assert {
    condition = contains(
      [for e in jsondecode(aws_ecs_task_definition.controller.container_definitions)[0].environment : e.value if e.name == "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS"],
      output.server_url,
    )
    error_message = "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS is not the server URL"
  }
  assert {
    condition     = !contains(keys(local.controller_task_settings), "ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE")
    error_message = "an Upbound token source without an Upbound token"
  }
  assert {
    condition     = jsondecode(aws_iam_role_policy.execution_server_token.policy).Statement[0].Resource == aws_secretsmanager_secret.server_token.arn
    error_message = "the execution role may read more (or other) than the server token"
  }
  assert {
    condition = toset(flatten([jsondecode(aws_iam_role_policy.controller.policy).Statement[0].Resource])) == toset([
      aws_secretsmanager_secret.kubeconfig[0].arn, aws_secretsmanager_secret.server_token.arn,
    ])
    error_message = "the controller may read other secrets than its kubeconfig and the server token"
  }
  assert {
    condition     = aws_service_discovery_service.server.dns_config[0].dns_records[0].type == "A"
    error_message = "the server is not registered as an A record in Cloud Map"
  }
  assert {
    condition     = length(aws_ecs_service.controller) == 1 && length(aws_lambda_function.controller) == 0
    error_message = "the controller must run as one ECS service by default"
  }
}

run "upbound_token" {
  variables {
    upbound_token_version = 1
  }

  assert {
    condition     = local.controller_task_settings["ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE"] == "aws-secretsmanager://${aws_secretsmanager_secret.upbound_token[0].arn}"
    error_message = "ROBOT_CONTROLLER_UPBOUND_TOKEN_SOURCE is not the Upbound token secret"
  }
  assert {
    condition     = contains(flatten([jsondecode(aws_iam_role_policy.controller.policy).Statement[0].Resource]), aws_secretsmanager_secret.upbound_token[0].arn)
    error_message = "the controller may not read the Upbound token"
  }
}

run "rotate_server_token" {
  variables {
    server_token_version = 2
  }

  # A new token means a new server task definition, so ECS redeploys it.
  assert {
    condition     = jsondecode(aws_ecs_task_definition.server.container_definitions)[0].dockerLabels["robot-byoc.server-token-version"] == "2"
    error_message = "bumping server_token_version does not redeploy the server"
  }
  assert {
    condition     = aws_secretsmanager_secret_version.server_token.secret_string_wo_version == 2
    error_message = "bumping server_token_version writes no new token"
  }
}
