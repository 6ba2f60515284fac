"""boto3 sessions from the standard credential chain, and AWS errors as sentences."""

import boto3
import botocore.exceptions
import botocore.parsers


class AwsError(Exception):
    """An AWS call failed; the message says what and how to fix it."""


def session(region=None, profile=None):
    try:
        found = boto3.Session(region_name=region or None, profile_name=profile or None)
    except botocore.exceptions.ProfileNotFound:
        raise AwsError(f"The AWS profile {profile!r} is not in ~/.aws/config or ~/.aws/credentials.") from None
    if not found.region_name:
        raise AwsError("No AWS region: pass --region, set DEPLOY_AWS_REGION, or AWS_REGION / AWS_DEFAULT_REGION.")
    if found.region_name not in found.get_available_regions("eks") and not _custom_endpoint():
        raise AwsError(
            f"{found.region_name!r} is not an AWS region with EKS (for example eu-west-1): correct --region, "
            "DEPLOY['aws_region'] (DEPLOY_AWS_REGION), or AWS_REGION / AWS_DEFAULT_REGION, whichever set it."
        )
    return found


def _custom_endpoint():
    import os

    return bool(os.environ.get("AWS_ENDPOINT_URL"))


def explain(exc, doing):
    """One sentence for a boto3/botocore error raised while ``doing`` something."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return AwsError(
            f"{doing}: no AWS credentials found. Set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run where an instance or pod role is available."
        )
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", "")
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
                    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"}:  # fmt: skip
            return AwsError(f"{doing}: access denied ({code}): {message}. Check the IAM permissions of this identity.")
        if code in {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"}:
            return AwsError(f"{doing}: AWS is throttling requests ({code}); retry in a minute.")
        if code in {"ResourceNotFoundException", "RepositoryNotFoundException", "FileSystemNotFound",
                    "DBInstanceNotFound", "NoSuchEntity", "CacheClusterNotFound"}:  # fmt: skip
            return AwsError(f"{doing}: not found ({code}): {message}")
        return AwsError(f"{doing}: {code}: {message}")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return AwsError(f"{doing}: cannot reach the AWS endpoint ({exc}). Check the region and the network.")
    if isinstance(exc, botocore.parsers.ResponseParserError):
        # Not a BotoCoreError: an HTML error page (a proxy, a wrong AWS_ENDPOINT_URL, a region the endpoint lacks).
        return AwsError(
            f"{doing}: the endpoint did not answer as AWS does (an error page, not an AWS response). Check the "
            "region, AWS_ENDPOINT_URL and any proxy in between."
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return AwsError(f"{doing}: {exc}")
    return None


def sentence(text):
    """``text`` ended with a full stop, so that a hint can follow it (AWS's own messages often end without)."""
    text = str(text).rstrip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def call(doing, function, **kwargs):
    try:
        return function(**kwargs)
    except Exception as exc:
        error = explain(exc, doing)
        if error is None:
            raise
        raise error from None
