"""Store URLs: `file:///path` (a directory, e.g. a volume) or `s3://bucket[/prefix]` (any S3-compatible store).

Credentials never appear in a URL (it is printed in logs and written into Job specs): they come from
the environment, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (in the chart: a Secret, by reference).
The endpoint and region may be given in the URL (`?endpoint=http://host:9000&region=eu-west-1`) or by
the AWS SDKs' own variables, `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) and `AWS_REGION` (or
`AWS_DEFAULT_REGION`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

ALLOWED = "file:///ABSOLUTE/PATH (or a directory path), or s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]"
# S3 bucket names: 3-63 characters, lowercase letters, digits, dots and hyphens, starting and ending
# with a letter or digit.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
S3_QUERY = ("endpoint", "region")
DEFAULT_REGION = "us-east-1"


class StoreError(Exception):
    """A results store that cannot be used; the message names the store and why."""


class StoreUrlError(StoreError, ValueError):
    """A store URL that is not valid; names the URL and what is allowed."""


@dataclass(frozen=True)
class StoreUrl:
    scheme: str  # "file" or "s3"
    path: str  # file: an absolute directory; s3: "bucket" or "bucket/prefix" (no slashes at either end)
    endpoint: str | None = None  # s3: e.g. http://10.0.0.5:9000; None: AWS
    region: str | None = None

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.path.split("/", 1)[1] if "/" in self.path else ""

    def __str__(self) -> str:
        """The URL as given to the store (never with credentials: they are never in it)."""
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"s3://{self.path}"

    def describe(self) -> str:
        """The URL with where it points, for messages."""
        return f"{self} (endpoint {self.endpoint})" if self.endpoint else str(self)


def parse_store_url(text: str, env: Mapping[str, str] | None = None) -> StoreUrl:
    """`text` as a StoreUrl, or StoreUrlError naming it and what is allowed."""
    env = os.environ if env is None else env
    raw = (text or "").strip()
    if not raw:
        raise StoreUrlError(f"results store URL is empty: allowed {ALLOWED}")
    if "://" not in raw:  # a plain directory path
        return StoreUrl("file", str(Path(raw).expanduser().resolve()))
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StoreUrlError(f"results store URL {raw!r}: a file URL needs an absolute path "
                                f"(file:///path, three slashes): allowed {ALLOWED}")
        if parts.query:
            raise StoreUrlError(f"results store URL {raw!r}: a file URL takes no query: allowed {ALLOWED}")
        return StoreUrl("file", str(Path(parts.path).resolve()))
    if scheme != "s3":
        raise StoreUrlError(f"results store URL {raw!r}: scheme {parts.scheme!r} is not supported: allowed {ALLOWED}")
    if "@" in parts.netloc:
        raise StoreUrlError(
            "results store URL s3://...@...: credentials in the URL are refused (a URL is printed in logs "
            "and written into Job specs); give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
            "environment (in the chart: results.s3.existingSecret)")
    bucket = parts.netloc
    if not BUCKET.match(bucket) or ".." in bucket:
        raise StoreUrlError(f"results store URL {raw!r}: bucket {bucket!r} is not a valid S3 bucket name "
                            "(3-63 lowercase letters, digits, dots and hyphens)")
    prefix = parts.path.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise StoreUrlError(f"results store URL {raw!r}: prefix {prefix!r} has an empty, '.' or '..' segment")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(S3_QUERY))
    if unknown:
        raise StoreUrlError(f"results store URL {raw!r}: unknown query parameter(s) {', '.join(unknown)}: "
                            f"allowed {', '.join(S3_QUERY)}")
    endpoint = query.get("endpoint") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    if endpoint:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.netloc or "@" in ep.netloc:
            raise StoreUrlError(f"results store endpoint {endpoint!r} is not valid: allowed http(s)://HOST[:PORT] "
                                "without credentials")
        endpoint = f"{ep.scheme}://{ep.netloc}"
    region = query.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return StoreUrl("s3", f"{bucket}/{prefix}" if prefix else bucket, endpoint, region)
