"""One signed S3 request (AWS Signature Version 4), with Python's standard library only.

    python3 cluster/s3-request.py [--credentials FILE] [--region R] [--ok CODE ...] METHOD URL [< BODY]

Sends METHOD URL (path-style: http://HOST:PORT/BUCKET[/KEY]) with the request body read from stdin for
PUT and POST, prints the response body on stdout, and exits 0 when the status is 2xx or one of --ok,
else 1 with the status and body on stderr. The credentials come from FILE (default: $S3_CREDENTIALS_FILE),
KEY=VALUE lines with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, never from the command line.
Used by cluster/objectstore.sh (the bucket made at start) and by the cluster tests (also in a pod).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def load_credentials(path: str) -> tuple[str, str]:
    """(access key id, secret access key) out of a KEY=VALUE file."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                values[key.strip()] = value.strip()
    try:
        return values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]
    except KeyError as exc:
        raise ValueError(f"{path} has no {exc.args[0]}=... line") from None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_url(url: str) -> tuple[str, str, str, str]:
    """(scheme, host[:port], path, query) as sent and signed: the path percent-encoded once (a URL given
    already encoded is not encoded twice), query pairs sorted and encoded."""
    u = urllib.parse.urlsplit(url)
    path = urllib.parse.quote(urllib.parse.unquote(u.path or "/"), safe="/~")
    query = "&".join(f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}"
                     for k, v in sorted(urllib.parse.parse_qsl(u.query, keep_blank_values=True)))
    return u.scheme, u.netloc, path, query


def signed_headers(method: str, url: str, body: bytes, access: str, secret: str, region: str,
                   now: datetime.datetime | None = None) -> dict[str, str]:
    """The headers that sign METHOD URL with this body (host, x-amz-date, x-amz-content-sha256, authorization)."""
    _, host, path, query = canonical_url(url)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    names = sorted(headers)
    canonical = "\n".join([method, path, query, *(f"{n}:{headers[n]}" for n in names), "",
                           ";".join(names), payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return headers


def request(method: str, url: str, credentials: str, body: bytes = b"", region: str = "us-east-1",
            timeout: float = 30) -> tuple[int, bytes]:
    """(status, body) of one signed request; HTTP errors are answers too, not exceptions."""
    access, secret = load_credentials(credentials)
    headers = signed_headers(method, url, body, access, secret, region)
    scheme, host, path, query = canonical_url(url)
    sent = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    req = urllib.request.Request(sent, data=body if method in ("PUT", "POST") else None, method=method,
                                 headers={k: v for k, v in headers.items() if k != "host"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--credentials", default=os.environ.get("S3_CREDENTIALS_FILE"))
    ap.add_argument("--region", default=os.environ.get("S3_REGION", "us-east-1"))
    ap.add_argument("--ok", type=int, action="append", default=[], help="a non-2xx status that is no failure")
    ap.add_argument("method", choices=["GET", "HEAD", "PUT", "POST", "DELETE"])
    ap.add_argument("url")
    args = ap.parse_args(argv)
    if not args.credentials:
        ap.error("no credentials file: --credentials FILE or S3_CREDENTIALS_FILE")
    body = sys.stdin.buffer.read() if args.method in ("PUT", "POST") else b""
    try:
        status, reply = request(args.method, args.url, args.credentials, body, args.region)
    except (OSError, ValueError) as exc:
        print(f"s3-request: {args.method} {args.url}: {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300 or status in args.ok:
        sys.stdout.buffer.write(reply)
        return 0
    print(f"s3-request: {args.method} {args.url}: HTTP {status}\n{reply.decode(errors='replace')}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
