# The GCP module's variable validations, planned by terraform on
# the module's variables.tf alone (a symlink beside this file): no provider
# is needed, so they run anywhere. Run from this directory:
#   terraform init && terraform test
# Every validation rule of ../../variables.tf has a run here that breaks it.

variables {
  project_id         = "robot-byoc-test"
  region             = "europe-west1"
  server_image       = "europe-west1-docker.pkg.dev/p/r/robot-server:1"
  controller_image   = "europe-west1-docker.pkg.dev/p/r/robot-controller:1"
  kubeconfig_version = 1
}

run "defaults" {
  command = plan

  assert {
    condition     = var.deletion_protection && var.enable_apis && var.vpc_egress == "connector" && var.controller_runtime == "worker-pool"
    error_message = "the defaults must protect the Cloud Run resources, enable the APIs, use the connector and run the controller as a worker pool"
  }
}

run "service_runtime_direct_vpc_existing_network_and_secret" {
  command = plan

  variables {
    controller_runtime       = "service"
    vpc_egress               = "direct"
    create_network           = false
    network_name             = "shared"
    subnet_name              = "run-egress"
    create_nat               = false
    create_kubeconfig_secret = false
    kubeconfig_secret_id     = "kubeconfig"
    kms_key_name             = "projects/p/locations/europe/keyRings/r/cryptoKeys/k"
    deletion_protection      = false
    kubeconfig_version       = null
  }
}

run "server_image_with_a_newline" {
  command = plan

  variables {
    server_image = "a\nb"
  }

  expect_failures = [var.server_image]
}

run "bad_lease_namespace" {
  command = plan

  variables {
    leader_election_namespace = "-x"
  }

  expect_failures = [var.leader_election_namespace]
}

run "memory_without_a_unit" {
  command = plan

  variables {
    controller_memory = "512"
  }

  expect_failures = [var.controller_memory]
}

run "server_cpu_0_5" {
  command = plan

  variables {
    server_cpu = "0.5"
  }

  expect_failures = [var.server_cpu]
}

run "blank_controller_image" {
  command = plan

  variables {
    controller_image = ""
  }

  expect_failures = [var.controller_image]
}

run "project_id_with_capitals" {
  command = plan

  variables {
    project_id = "My_Project"
  }

  expect_failures = [var.project_id]
}

run "region_with_a_space" {
  command = plan

  variables {
    region = "europe west1"
  }

  expect_failures = [var.region]
}

run "name_too_long_for_an_account_id" {
  command = plan

  variables {
    name = "robot-byoc-production"
  }

  expect_failures = [var.name]
}

run "unknown_runtime" {
  command = plan

  variables {
    controller_runtime = "job"
  }

  expect_failures = [var.controller_runtime]
}

run "unknown_egress" {
  command = plan

  variables {
    vpc_egress = "nat"
  }

  expect_failures = [var.vpc_egress]
}

run "existing_network_not_named" {
  command = plan

  variables {
    create_network = false
  }

  expect_failures = [var.network_name, var.subnet_name]
}

run "existing_secret_not_named" {
  command = plan

  variables {
    create_kubeconfig_secret = false
    kubeconfig_version       = null
  }

  expect_failures = [var.kubeconfig_secret_id]
}

run "secret_given_as_a_resource_name" {
  command = plan

  variables {
    kubeconfig_secret_id = "projects/p/secrets/kubeconfig"
  }

  expect_failures = [var.kubeconfig_secret_id]
}

run "kubeconfig_write_without_a_created_secret" {
  command = plan

  variables {
    create_kubeconfig_secret = false
    kubeconfig_secret_id     = "kc"
    kubeconfig_version       = 1
  }

  expect_failures = [var.kubeconfig_version]
}

run "kms_key_not_a_key_name" {
  command = plan

  variables {
    kms_key_name = "key"
  }

  expect_failures = [var.kms_key_name]
}

run "connector_max_below_min" {
  command = plan

  variables {
    connector_min_instances = 3
    connector_max_instances = 3
  }

  expect_failures = [var.connector_max_instances]
}

run "connector_min_of_one" {
  command = plan

  variables {
    connector_min_instances = 1
  }

  expect_failures = [var.connector_min_instances]
}

run "connector_machine" {
  command = plan

  variables {
    connector_machine_type = "n2-standard-2"
  }

  expect_failures = [var.connector_machine_type]
}

run "cpu_3" {
  command = plan

  variables {
    controller_cpu = "3"
  }

  expect_failures = [var.controller_cpu]
}

run "memory_in_mb" {
  command = plan

  variables {
    server_memory = "512MB"
  }

  expect_failures = [var.server_memory]
}

run "subnet_not_a_cidr" {
  command = plan

  variables {
    subnet_cidr = "10.8.0.0"
  }

  expect_failures = [var.subnet_cidr]
}

run "unknown_api_group" {
  command = plan

  variables {
    api_group = "x"
  }

  expect_failures = [var.api_group]
}

run "direct_vpc_egress_in_the_default_28" {
  command = plan

  variables {
    vpc_egress = "direct"
  }

  expect_failures = [var.subnet_cidr]
}

run "direct_vpc_egress_in_a_26" {
  command = plan

  variables {
    vpc_egress  = "direct"
    subnet_cidr = "10.8.0.0/26"
  }
}

run "connector_in_a_26" {
  command = plan

  variables {
    subnet_cidr = "10.8.0.0/26"
  }

  expect_failures = [var.subnet_cidr]
}

run "direct_vpc_egress_in_an_existing_subnet" {
  command = plan

  variables {
    vpc_egress     = "direct"
    create_network = false
    network_name   = "shared"
    subnet_name    = "run"
    create_nat     = false
  }
}

run "kubeconfig_left_out_while_the_module_creates_the_secret" {
  command = plan

  variables {
    kubeconfig_version = null
  }

  expect_failures = [var.kubeconfig_version]
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

run "apis_managed_elsewhere" {
  command = plan

  variables {
    enable_apis = false
  }
}
