terraform {
  # 1.11: write-only attributes keep the kubeconfig and the tokens out of
  # the state.
  required_version = ">= 1.11"

  required_providers {
    # 5.100: write-only secret_string_wo and the ephemeral
    # aws_secretsmanager_random_password. Below 7.0: 6.x is what most
    # root modules use now; nothing here is removed in 6.x (see the
    # region and Cloud Map notes in main.tf).
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 7.0"
    }
  }
}
