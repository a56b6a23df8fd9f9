# The AWS module's variable validations, planned by terraform on
# the module's variables.tf alone (a symlink beside this file): no provider
# is needed, so they run anywhere. Run from this directory:
#   terraform init && terraform test
# Every validation rule of ../../variables.tf has a run here that breaks it.

variables {
  server_image       = "registry.example/robot-server:1"
  controller_image   = "registry.example/robot-controller:1"
  kubeconfig_version = 1
}

run "defaults" {
  command = plan

}

run "existing_network_and_secret_lambda_customer_key" {
  command = plan

  variables {
    create_vpc               = false
    vpc_id                   = "vpc-0abc"
    private_subnet_ids       = ["subnet-01", "subnet-02"]
    create_kubeconfig_secret = false
    kubeconfig_secret_arn    = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kc-AbCdEf"
    kms_key_arn              = "arn:aws:kms:eu-west-1:123456789012:key/1234"
    controller_runtime       = "lambda"
    lambda_package_path      = "target/lambda/robot-controller/bootstrap.zip"
    leader_election          = true
    control_plane_port       = 6443
    kubeconfig_version       = null
  }
}

run "blank_image" {
  command = plan

  variables {
    server_image = " "
  }

  expect_failures = [var.server_image]
}

run "image_with_a_space" {
  command = plan

  variables {
    controller_image = "a b"
  }

  expect_failures = [var.controller_image]
}

run "upper_case_name" {
  command = plan

  variables {
    name = "Robot_BYOC"
  }

  expect_failures = [var.name]
}

run "name_too_long" {
  command = plan

  variables {
    name = "robot-byoc-with-a-long-name"
  }

  expect_failures = [var.name]
}

run "existing_vpc_not_named" {
  command = plan

  variables {
    create_vpc = false
  }

  expect_failures = [var.vpc_id, var.private_subnet_ids]
}

run "malformed_subnet_id" {
  command = plan

  variables {
    create_vpc         = false
    vpc_id             = "vpc-0abc"
    private_subnet_ids = ["sn-1"]
  }

  expect_failures = [var.private_subnet_ids]
}

run "vpc_too_large" {
  command = plan

  variables {
    vpc_cidr = "10.0.0.0/8"
  }

  expect_failures = [var.vpc_cidr]
}

run "not_a_cidr" {
  command = plan

  variables {
    vpc_cidr = "10.0.0.0"
  }

  expect_failures = [var.vpc_cidr]
}

run "five_zones" {
  command = plan

  variables {
    az_count = 5
  }

  expect_failures = [var.az_count]
}

run "bad_control_plane_cidr" {
  command = plan

  variables {
    control_plane_cidr_blocks = ["10.0.0.0/33"]
  }

  expect_failures = [var.control_plane_cidr_blocks]
}

run "no_control_plane_cidr" {
  command = plan

  variables {
    control_plane_cidr_blocks = []
  }

  expect_failures = [var.control_plane_cidr_blocks]
}

run "no_aws_api_cidr" {
  command = plan

  variables {
    aws_api_cidr_blocks = []
  }

  expect_failures = [var.aws_api_cidr_blocks]
}

run "aws_api_cidr_malformed" {
  command = plan

  variables {
    aws_api_cidr_blocks = ["0.0.0.0"]
  }

  expect_failures = [var.aws_api_cidr_blocks]
}

run "server_memory_beyond_fargate_s" {
  command = plan

  variables {
    server_memory = 65536
  }

  expect_failures = [var.server_memory]
}

run "controller_cpu_100" {
  command = plan

  variables {
    controller_cpu = 100
  }

  expect_failures = [var.controller_cpu]
}

run "unknown_controller_runtime" {
  command = plan

  variables {
    controller_runtime = "fargate"
  }

  expect_failures = [var.controller_runtime]
}

run "port_out_of_range" {
  command = plan

  variables {
    control_plane_port = 70000
  }

  expect_failures = [var.control_plane_port]
}

run "bad_namespace" {
  command = plan

  variables {
    service_discovery_namespace = "Robot BYOC"
  }

  expect_failures = [var.service_discovery_namespace]
}

run "existing_secret_not_named" {
  command = plan

  variables {
    create_kubeconfig_secret = false
    kubeconfig_version       = null
  }

  expect_failures = [var.kubeconfig_secret_arn]
}

run "kubeconfig_write_without_a_created_secret" {
  command = plan

  variables {
    create_kubeconfig_secret = false
    kubeconfig_secret_arn    = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kc-AbCdEf"
    kubeconfig_version       = 1
  }

  expect_failures = [var.kubeconfig_version]
}

run "kubeconfig_version_zero" {
  command = plan

  variables {
    kubeconfig_version = 0
  }

  expect_failures = [var.kubeconfig_version]
}

run "kms_key_not_an_arn" {
  command = plan

  variables {
    kms_key_arn = "alias/mine"
  }

  expect_failures = [var.kms_key_arn]
}

run "recovery_window_3_days" {
  command = plan

  variables {
    recovery_window_in_days = 3
  }

  expect_failures = [var.recovery_window_in_days]
}

run "retention_cloudwatch_refuses" {
  command = plan

  variables {
    log_retention_in_days = 10
  }

  expect_failures = [var.log_retention_in_days]
}

run "log_kms_key_not_an_arn" {
  command = plan

  variables {
    cloudwatch_log_group_kms_key_id = "key"
  }

  expect_failures = [var.cloudwatch_log_group_kms_key_id]
}

run "fargate_cpu_300" {
  command = plan

  variables {
    server_cpu = 300
  }

  expect_failures = [var.server_cpu]
}

run "controller_memory_256" {
  command = plan

  variables {
    controller_memory = 256
  }

  expect_failures = [var.controller_memory]
}

run "stop_timeout_beyond_fargate_s" {
  command = plan

  variables {
    stop_timeout = 200
  }

  expect_failures = [var.stop_timeout]
}

run "unknown_architecture" {
  command = plan

  variables {
    cpu_architecture = "arm"
  }

  expect_failures = [var.cpu_architecture]
}

run "unknown_api_group" {
  command = plan

  variables {
    api_group = "robots.example.com"
  }

  expect_failures = [var.api_group]
}

run "bad_lease_namespace" {
  command = plan

  variables {
    leader_election_namespace = "Kube_System"
  }

  expect_failures = [var.leader_election_namespace]
}

run "lambda_without_package" {
  command = plan

  variables {
    controller_runtime = "lambda"
  }

  expect_failures = [var.lambda_package_path]
}

run "lambda_package_not_a_zip" {
  command = plan

  variables {
    controller_runtime  = "lambda"
    lambda_package_path = "bootstrap"
  }

  expect_failures = [var.lambda_package_path]
}

run "lambda_architecture" {
  command = plan

  variables {
    lambda_architecture = "amd64"
  }

  expect_failures = [var.lambda_architecture]
}

run "schedule_in_words" {
  command = plan

  variables {
    lambda_schedule_expression = "every 5 minutes"
  }

  expect_failures = [var.lambda_schedule_expression]
}

run "lambda_timeout_1000" {
  command = plan

  variables {
    lambda_timeout = 1000
  }

  expect_failures = [var.lambda_timeout]
}

run "lambda_memory_64" {
  command = plan

  variables {
    lambda_memory_size = 64
  }

  expect_failures = [var.lambda_memory_size]
}

run "kubeconfig_left_out_while_the_module_creates_the_secret" {
  command = plan

  variables {
    kubeconfig_version = null
  }

  expect_failures = [var.kubeconfig_version]
}

run "server_token_version_zero" {
  command = plan

  variables {
    server_token_version = 0
  }

  expect_failures = [var.server_token_version]
}

run "upbound_token_version_zero" {
  command = plan

  variables {
    upbound_token_version = 0
  }

  expect_failures = [var.upbound_token_version]
}

run "an_upbound_token" {
  command = plan

  variables {
    upbound_token_version = 1
  }
}
