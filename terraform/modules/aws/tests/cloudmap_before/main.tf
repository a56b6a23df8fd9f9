# The Cloud Map service as the module made it before it dropped the
# deprecated failure_threshold: applied first by
# ../cloudmap_migration.tftest.hcl, which then plans the module itself on
# the same state.

variable "name" {
  type = string
}

variable "service_discovery_namespace" {
  type = string
}

resource "aws_vpc" "before" {
  #checkov:skip=CKV2_AWS_11:Test fixture, applied to moto only and destroyed by the test: nothing runs in it to log.
  #checkov:skip=CKV2_AWS_12:Test fixture, applied to moto only: it holds no instance the default security group could expose.
  cidr_block           = "10.42.0.0/16"
  enable_dns_support   = true
  enable_dns_hostnames = true
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = var.service_discovery_namespace
  description = "robot-byoc: the robot server's private name"
  vpc         = aws_vpc.before.id
}

resource "aws_service_discovery_service" "server" {
  name = "robot-server"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }
}

output "vpc_id" {
  value = aws_vpc.before.id
}

output "service_id" {
  value = aws_service_discovery_service.server.id
}
