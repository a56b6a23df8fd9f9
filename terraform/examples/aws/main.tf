provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = "robot-byoc"
      ManagedBy = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

# One customer managed key for the kubeconfig secret and the log groups.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:This is a key policy: "*" as resource means this key only, and the account root must administer it.
  #checkov:skip=CKV_AWS_356:This is a key policy: "*" as resource means this key only.
  #checkov:skip=CKV_AWS_109:This is a key policy: the account root keeps administration so the key never becomes unmanageable.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypts"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: secrets (kubeconfig, tokens) and logs"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

module "robot_byoc" {
  source = "../../modules/aws"

  name             = var.name
  server_image     = var.server_image
  controller_image = var.controller_image

  kubeconfig              = var.kubeconfig
  kubeconfig_version      = var.kubeconfig_version
  kms_key_arn             = aws_kms_key.this.arn
  recovery_window_in_days = var.recovery_window_in_days

  cloudwatch_log_group_kms_key_id = aws_kms_key.this.arn

  control_plane_cidr_blocks = var.control_plane_cidr_blocks
  control_plane_port        = var.control_plane_port

  controller_runtime  = var.controller_runtime
  lambda_package_path = var.lambda_package_path

  server_token_version  = var.server_token_version
  upbound_token         = var.upbound_token
  upbound_token_version = var.upbound_token_version
}
