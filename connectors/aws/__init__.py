"""AWS IAM Identity Center pieces: SCIM dialect, permission-set assignments (sso-admin).

The connector itself is `connectors.aws_identity_center.AwsIdentityCenterConnector`.
"""
