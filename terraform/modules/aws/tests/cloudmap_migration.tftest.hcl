# Upgrading from a module version that set
# health_check_custom_config { failure_threshold = 1 } must not replace
# the Cloud Map service (the block is ForceNew): the old resource is
# applied against moto, then the module is planned on the same state.
# Run like moto.tftest.hcl (AWS_ENDPOINT_URL pointing at moto).

variables {
  name                        = "robot-migrate"
  service_discovery_namespace = "robot-migrate.internal"
  server_image                = "localhost/robot-server:tftest"
  controller_image            = "localhost/robot-controller:tftest"
  kubeconfig                  = "apiVersion: v1\nkind: Config\n"
  # checkov:skip=CKV_SECRET_6:a placeholder for a test against moto, no secret
  upbound_token           = "not-a-real-token"
  kubeconfig_version      = 1
  recovery_window_in_days = 0
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
}

run "before" {
  state_key = "cloudmap"

  module {
    source = "./tests/cloudmap_before"
  }

  assert {
    condition     = aws_service_discovery_service.server.health_check_custom_config[0].failure_threshold == 1
    error_message = "moto did not keep the old health check config"
  }
}

run "after" {
  command   = plan
  state_key = "cloudmap"

  variables {
    create_vpc         = false
    vpc_id             = run.before.vpc_id
    private_subnet_ids = ["subnet-0123456789abcdef0"]
  }

  # A replacement would make the ID unknown in the plan.
  assert {
    condition     = aws_service_discovery_service.server.id == run.before.service_id
    error_message = "the Cloud Map service would be replaced"
  }
}
