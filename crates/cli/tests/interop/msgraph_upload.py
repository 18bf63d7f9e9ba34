"""Uploads files to an `upsession serve` with the official Microsoft Graph Python SDK.

The fragments are sent by msgraph-core's own `LargeFileUploadTask`, unchanged and at
its default chunk size (5 MiB), over the SDK's request adapter (`BaseGraphRequestAdapter`,
kiota's httpx adapter and the SDK's default middleware). Only the setup around it (the
draft message, the upload session, the status request that resumes, the download that
checks the bytes) uses plain httpx, as an application would use the generated msgraph-sdk
for those.

Usage: msgraph_upload.py BASE_URL [--chunk N] [--resume] FILE=AUTH [FILE=AUTH ...]
  BASE_URL  e.g. http://127.0.0.1:PORT/v1.0; the bearer token is in UPSESSION_TOKEN.
  --chunk N the task's max_chunk_size (default: the SDK's own default).
  --resume  the server may be killed mid-upload: when the task fails, wait for the
            server to come back, ask the session which ranges it expects (GET
            uploadUrl), and continue with the SDK's `resume()` on a task built from
            that session, as an application resumes after a dropped connection.
  AUTH      how the task's adapter authenticates the fragment PUTs:
              none    AnonymousAuthenticationProvider: no Authorization, as with real
                      Graph, whose uploadUrl is on a host the Graph token is not sent to;
              bearer  BaseBearerTokenAuthenticationProvider allowed on 127.0.0.1, so the
                      fragments carry the bearer token (the server must not mind).

Every HTTP exchange the SDK makes is logged (through an httpx event hook, which only
observes), and each answered fragment is printed at once as `ANSWERED STATUS RANGE` (a
test may kill the server on it). The script exits 0 only if every file's attachment,
downloaded with `GET {Location}/$value`, has the source file's SHA-256 and the wire
answers are those docs/PROTOCOL.md promises. Its last stdout line is `RESULT {json}`.

msgraph_drive_upload.py imports its SDK adapter, wire checks and runner from here.
"""

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
import traceback
import urllib.parse

import httpx
from kiota_abstractions.api_client_builder import register_default_deserializer
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    AnonymousAuthenticationProvider,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from msgraph_core import BaseGraphRequestAdapter, GraphClientFactory
from msgraph_core.models import LargeFileUploadSession
from msgraph_core.tasks.large_file_upload import LargeFileUploadTask

# How long a resuming script waits for the server to come back.
RESUME_WAIT_S = 90


class Failed(Exception):
    pass


class ErrorLog(logging.Handler):
    """The task logs, and then swallows, every exception after its first fragment;
    collect those records so that a swallowed failure still fails the script."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(self.format(record))


ERRORS = ErrorLog()


class StaticToken(AccessTokenProvider):
    def __init__(self, token, hosts):
        self.token = token
        self.validator = AllowedHostsValidator(hosts)

    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return self.token if self.validator.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self):
        return self.validator


def redact(url):
    """The uploadUrl's query is its credential: keep it out of the log."""
    parts = urllib.parse.urlsplit(str(url))
    return urllib.parse.urlunsplit(parts._replace(query="…" if parts.query else ""))


def sdk_adapter(auth, token, wire):
    """The SDK's adapter on the SDK's default client and middleware, plus a wire log."""

    async def on_request(request):
        wire.append({
            "method": request.method,
            "url": redact(request.url),
            "content_range": request.headers.get("content-range"),
            "length": len(request.content) if request.method == "PUT" else None,
            "authorization": "authorization" in request.headers,
            "status": None,
        })

    async def on_response(response):
        await response.aread()
        entry = wire[-1]
        entry["status"] = response.status_code
        entry["content_type"] = response.headers.get("content-type")
        entry["location"] = response.headers.get("location")
        entry["body"] = response.content.decode("utf-8", "replace")
        print(f"ANSWERED {response.status_code} {entry['content_range']}", flush=True)

    client = KiotaClientFactory.get_default_client()
    client.event_hooks = {"request": [on_request], "response": [on_response]}
    client = GraphClientFactory.create_with_default_middleware(client=client)
    if auth == "none":
        provider = AnonymousAuthenticationProvider()
    elif auth == "bearer":
        provider = BaseBearerTokenAuthenticationProvider(StaticToken(token, ["127.0.0.1"]))
    else:
        raise Failed(f"unknown AUTH {auth!r}: use none or bearer")
    return BaseGraphRequestAdapter(provider, http_client=client)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def show(name, i, e):
    """Prints the `i`-th exchange of the wire log."""
    print(f"  {name} #{i}: {e['method']} {e['content_range']} ({e['length']} B, "
          f"Authorization: {'yes' if e['authorization'] else 'no'}) -> {e.get('status')} "
          f"{e.get('content_type') or '-'} {e.get('body', '')[:120]!r}"
          + (f" Location: {e['location']}" if e.get("location") else ""))


def json_answer(name, e):
    """An answer's body, which must be application/json."""
    if (e["content_type"] or "").split(";")[0].strip() != "application/json":
        raise Failed(f"{name}: a {e['status']} answer is not application/json: {e}")
    return json.loads(e["body"])


def check_progress(name, e):
    """A fragment answer that asks for more: JSON, no id, closed ranges only."""
    body = json_answer(name, e)
    if "id" in body:
        raise Failed(f"{name}: a {e['status']} fragment answer has an id: {e}")
    for r in body.get("nextExpectedRanges", []):
        a, _, b = r.partition("-")
        if not (a.isdigit() and b.isdigit()):
            raise Failed(f"{name}: nextExpectedRanges entry {r!r} is not closed 'a-b'")


def check_wire(name, wire, size):
    """Checks each answer the SDK saw against the contract and prints the exchange.
    Requests that got no answer (the server was killed under them) are shown and
    skipped."""
    for i, e in enumerate(wire):
        show(name, i, e)
        status = e.get("status")
        if status is None:
            continue
        if status == 200:
            check_progress(name, e)
        elif status == 201:
            if not e["location"]:
                raise Failed(f"{name}: 201 without Location: {e}")
            if e["body"] or e["content_type"]:
                raise Failed(f"{name}: 201 with a body or Content-Type: {e}")
        else:
            raise Failed(f"{name}: the SDK saw an unexpected answer: {e}")
    created = [e for e in wire if e.get("status") == 201]
    if not created:
        raise Failed(f"{name}: no fragment was answered 201 (the upload never completed)")
    locations = {e["location"] for e in created}
    if len(locations) != 1:
        raise Failed(f"{name}: the 201 answers name different Locations: {locations}")
    check_coverage(name, wire, size)
    first_201 = wire.index(created[0])
    return locations.pop(), len(wire) - 1 - first_201


def check_coverage(name, wire, size):
    """The answered fragments cover every byte from 0 to `size`, none skipped (each
    offset counted once)."""
    end = 0
    for e in wire:
        if e.get("status") is None:
            continue
        a, b = e["content_range"].split(" ")[1].split("/")[0].split("-")
        if int(a) > end:
            raise Failed(f"{name}: the SDK skipped bytes {end}..{a}")
        end = max(end, int(b) + 1)
    if end != size:
        raise Failed(f"{name}: the SDK's fragments cover {end} of {size} bytes")


def read_session(content, upload_url=None):
    """The SDK's own JSON parsing builds the session a task takes."""
    session = JsonParseNodeFactory().get_root_parse_node(
        "application/json", content).get_object_value(LargeFileUploadSession)
    if upload_url is not None:
        # A status answer carries no uploadUrl (.NET's task restores it the same way).
        session.upload_url = upload_url
    if not session.upload_url or session.expiration_date_time is None:
        raise Failed(f"the SDK could not read the upload session: {content[:300]!r}")
    return session


async def wait_for_session(http, upload_url):
    """After the server died: polls `GET uploadUrl` until it answers again."""
    deadline = time.monotonic() + RESUME_WAIT_S
    while time.monotonic() < deadline:
        try:
            r = await http.get(upload_url)
            if r.status_code == 200:
                return r.content
            raise Failed(f"GET uploadUrl answered {r.status_code} after a restart: {r.text}")
        except httpx.TransportError:
            await asyncio.sleep(0.2)
    raise Failed(f"the server did not come back within {RESUME_WAIT_S} s")


async def upload_one(http, base, token, path, auth, chunk, resume):
    name = os.path.basename(path)
    size = os.path.getsize(path)
    want = sha256_file(path)
    headers = {"Authorization": f"Bearer {token}"}

    r = await http.post(f"{base}/me/messages", headers=headers, json={"subject": f"SDK {name}"})
    if r.status_code != 201:
        raise Failed(f"{name}: creating the draft answered {r.status_code}: {r.text}")
    message_id = r.json()["id"]
    item = {"AttachmentItem": {"attachmentType": "file", "name": name, "size": size,
                               "contentType": "application/octet-stream"}}
    r = await http.post(f"{base}/me/messages/{message_id}/attachments/createUploadSession",
                        headers=headers, json=item)
    if r.status_code != 201:
        raise Failed(f"{name}: createUploadSession answered {r.status_code}: {r.text}")
    session = read_session(r.content)
    upload_url = session.upload_url

    wire = []
    adapter = sdk_adapter(auth, token, wire)
    progress = []
    options = {} if chunk is None else {"max_chunk_size": chunk}
    interruptions = 0
    with open(path, "rb") as stream:
        task = LargeFileUploadTask(session, adapter, stream, **options)
        try:
            result = await task.upload(lambda uploaded: progress.append(list(uploaded)))
        except (httpx.TransportError, OSError) as error:
            if not resume:
                raise
            interruptions += 1
            print(f"INTERRUPTED {type(error).__name__}: {error}", flush=True)
            # What the task logged while the server was gone is expected.
            ERRORS.records.clear()
            fresh = read_session(await wait_for_session(http, upload_url), upload_url)
            print(f"RESUMING from {fresh.next_expected_ranges}", flush=True)
            task = LargeFileUploadTask(fresh, adapter, stream, **options)
            result = await task.resume()
    if resume and not interruptions:
        raise Failed(f"{name}: --resume, but the upload was never interrupted")

    location, after_201 = check_wire(name, wire, size)
    print(f"  {name}: {len(wire)} PUTs, {after_201} after the first 201; "
          f"UploadResult.location={redact(result.location)} "
          f"item_response={result.item_response!r}; progress callbacks: {len(progress)}")

    r = await http.get(f"{location}/$value", headers=headers)
    if r.status_code != 200:
        raise Failed(f"{name}: GET {location}/$value answered {r.status_code}: {r.text[:300]}")
    got = hashlib.sha256(r.content).hexdigest()
    if len(r.content) != size or got != want:
        raise Failed(f"{name}: downloaded {len(r.content)} B with SHA-256 {got}, "
                     f"the file has {size} B with SHA-256 {want}")

    r = await http.get(f"{base}/me/messages/{message_id}/attachments", headers=headers)
    # Graph's Location ends in the id; Outlook REST's in `Attachments('id')`.
    listed = [a for a in r.json().get("value", []) if a.get("id", "?") in location]
    if r.status_code != 200 or len(listed) != 1 or listed[0].get("size") != size:
        raise Failed(f"{name}: the attachment list does not show it: {r.status_code} {r.text[:300]}")
    print(f"  {name}: OK, {size} B, SHA-256 {got}", flush=True)
    return {"file": path, "size": size, "sha256": got, "location": location,
            "auth": auth, "puts": len(wire), "puts_after_201": after_201,
            "interruptions": interruptions,
            "statuses": [e["status"] for e in wire]}


async def main(argv):
    args = argv[1:]
    chunk = None
    resume = False
    if "--resume" in args:
        args.remove("--resume")
        resume = True
    if "--chunk" in args:
        i = args.index("--chunk")
        chunk = int(args[i + 1])
        del args[i:i + 2]
    if len(args) < 2:
        raise Failed(__doc__)
    base = args[0].rstrip("/")
    results = []
    async with httpx.AsyncClient(timeout=120) as http:
        for arg in args[1:]:
            path, _, auth = arg.rpartition("=")
            if not path:
                raise Failed(f"expected FILE=AUTH, got {arg!r}")
            results.append(await upload_one(http, base, token(), path, auth, chunk, resume))
            if ERRORS.records:
                raise Failed(f"{path}: the SDK logged errors it then ignored")
    print("RESULT " + json.dumps(results), flush=True)


def token():
    """The bearer token, from UPSESSION_TOKEN."""
    value = os.environ.get("UPSESSION_TOKEN")
    if not value:
        raise Failed("UPSESSION_TOKEN is not set")
    return value


def run_script(main):
    """Runs `main(sys.argv)` with the SDK's logged errors collected; on a failure
    prints them and `FAILED: …` to stderr and exits 1."""
    logging.getLogger().addHandler(ERRORS)
    register_default_deserializer(JsonParseNodeFactory)
    try:
        asyncio.run(main(sys.argv))
    except Exception as e:  # pylint: disable=broad-except
        if not isinstance(e, Failed):
            traceback.print_exc()
        for record in ERRORS.records:
            print(f"SDK logged: {record}", file=sys.stderr)
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_script(main)
