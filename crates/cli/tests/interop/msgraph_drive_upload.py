"""Uploads files to a OneDrive path of an `upsession serve` with the official Microsoft
Graph Python SDK, one conflict behaviour at a time.

The fragments are sent by msgraph-core's own `LargeFileUploadTask`, unchanged and at its
default chunk size (5 MiB), over the SDK's request adapter, with no parsable factory
(msgraph-sdk's DriveItem model is not installed): its last answer is kept as raw bytes,
the driveItem's JSON. The session is made with plain httpx, as msgraph-sdk's generated
builders would make it: `GET {base}/me/drive` for the drive id, then
`client.drives.by_drive_id(id).items.by_drive_item_id("root:/PATH:")
.create_upload_session.post(body)`, whose URL comes from kiota's own template expansion
(`root%3A%2F…%3A`, one percent-encoded segment) and whose body is
`{"item": {"@microsoft.graph.conflictBehavior": C}}`.

Usage: msgraph_drive_upload.py BASE_URL DRIVE_PATH FILE=CONFLICT [FILE=CONFLICT ...]
  BASE_URL    e.g. http://127.0.0.1:PORT/v1.0; the bearer token is in UPSESSION_TOKEN.
  DRIVE_PATH  where each file goes, e.g. `Uploads/big file #1.bin`.
  CONFLICT    fail, replace or rename: the upload session's conflict behaviour.

Each upload either completes (the first answer with an `id`, 201 or 200) or ends in a
Graph error (the task raises it, as under `fail` with the name taken: 409
nameAlreadyExists); both are reported. A completed upload must carry the file's size,
its `quickXorHash` (computed here, and checked against Microsoft's published vectors
first) and `sha256Hash`, and its content, read back with
`GET …/root:/{parentReference.path}/{name}:/content`, must be the file's bytes. After an
error the requested path's content is read back and reported. The script exits 0 only if
all of that holds; its last stdout line is `RESULT {json}`, one entry per upload.
"""

import base64
import hashlib
import json
import os
import sys
import urllib.parse

import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph_core.tasks.large_file_upload import LargeFileUploadTask

from msgraph_upload import (
    ERRORS,
    Failed,
    check_coverage,
    check_progress,
    json_answer,
    read_session,
    run_script,
    sdk_adapter,
    show,
    token,
)

# msgraph-sdk's `drives/{id}/items/{id}/createUploadSession` request builder.
CREATE_UPLOAD_SESSION = (
    "{+baseurl}/drives/{drive%2Did}/items/{driveItem%2Did}/createUploadSession")

# QuickXorHash, as Microsoft describes it: a 160-bit ring; byte i is XORed in at bit
# (i * 11) mod 160, then the length (64 bits, little-endian) into the last 8 bytes.
WIDTH = 160
SHIFT = 11
# Bytes 160 apart land on the same bit (11 and 160 are coprime), so a file folds into
# 160 lanes, each the XOR of its bytes k, k + 160, …: read in blocks of whole rows.
BLOCK = WIDTH * 65536
# Published test vectors (input → hash, both base64).
VECTORS = {
    "": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "Sg==": "SgAAAAAAAAAAAAAAAQAAAAAAAAA=",
    "tbQ=": "taAFAAAAAAAAAAAAAgAAAAAAAAA=",
    "/aNzzCFPS/A=": "/RjFHJgRgicsAR4ACAAAAAAAAAA=",
}


def fold(block):
    """The lanes of `block` (a whole number of 160-byte rows, from an offset that is
    too): an int whose byte k is the XOR of the block's bytes k, k + 160, …. Halves
    the rows until one is left, each step one XOR of two big ints."""
    rows = len(block) // WIDTH
    x = int.from_bytes(block, "little")
    while rows > 1:
        half = rows // 2
        bits = 8 * WIDTH * half
        x = (x & ((1 << bits) - 1)) ^ (x >> bits)
        rows -= half
    return x


def pad(data):
    """`data` padded with zeros (which XOR to nothing) to whole rows."""
    return data + bytes(-len(data) % WIDTH)


def quick_xor_finish(lanes, length):
    """The hash of a stream of `length` bytes whose lanes are `lanes`."""
    state = bytearray(WIDTH // 8)
    for k, b in enumerate(lanes.to_bytes(WIDTH, "little")):
        bit = (k * SHIFT) % WIDTH
        i, o = divmod(bit, 8)
        state[i] ^= (b << o) & 0xFF
        if o:
            state[(i + 1) % len(state)] ^= b >> (8 - o)
    for i, b in enumerate(length.to_bytes(8, "little")):
        state[len(state) - 8 + i] ^= b
    return base64.b64encode(bytes(state)).decode()


def quick_xor(data):
    return quick_xor_finish(fold(pad(data)), len(data))


def check_vectors():
    for given, want in VECTORS.items():
        got = quick_xor(base64.b64decode(given))
        if got != want:
            raise Failed(f"QuickXorHash({given!r}) is {got}, the published vector {want}")


def digests(path):
    """A file's size, SHA-256 (hex) and QuickXorHash (base64), in one read."""
    sha, lanes, size = hashlib.sha256(), 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            sha.update(block)
            lanes ^= fold(pad(block))
            size += len(block)
    return size, sha.hexdigest(), quick_xor_finish(lanes, size)


def content_url(base, path):
    """`…/me/drive/root:/{path}:/content`, each name percent-encoded."""
    return f"{base}/me/drive/root:/{urllib.parse.quote(path.strip('/'))}:/content"


def check_drive_wire(name, wire, size):
    """Checks and prints each fragment answer: 202 while bytes are missing, then the
    driveItem (201 or 200) once and again for every re-send, or a Graph error that
    ends the upload. Returns the answer that completed it (or ended it)."""
    done = None
    for i, e in enumerate(wire):
        show(name, i, e)
        status = e["status"]
        if status == 202 and done is None:
            check_progress(name, e)
        elif status in (200, 201):
            item = json_answer(name, e)
            if "id" not in item:
                raise Failed(f"{name}: a {status} answer without an id: {e}")
            if done is None:
                done = e
            elif done["status"] not in (200, 201) or item["id"] != json_answer(name, done)["id"]:
                raise Failed(f"{name}: a later answer differs from {done}: {e}")
        elif status >= 400 and "error" in json_answer(name, e):
            if done is not None and done["status"] in (200, 201):
                raise Failed(f"{name}: an error after completion: {e}")
            done = e
        else:
            raise Failed(f"{name}: the SDK saw an unexpected answer: {e}")
    if done is None:
        raise Failed(f"{name}: no answer completed or ended the upload")
    if done["status"] in (200, 201):
        check_coverage(name, wire, size)
    return done


async def upload_one(http, base, drive_id, drive_path, path, conflict):
    name = os.path.basename(path)
    size, sha256, quick = digests(path)
    headers = {"Authorization": f"Bearer {token()}"}
    builder = RequestInformation(Method.POST, CREATE_UPLOAD_SESSION, {
        "baseurl": base, "drive%2Did": drive_id, "driveItem%2Did": f"root:/{drive_path}:"})
    body = {"item": {"@microsoft.graph.conflictBehavior": conflict}}
    r = await http.post(builder.url, headers=headers, json=body)
    if r.status_code != 200:
        raise Failed(f"{name}: POST {builder.url} answered {r.status_code}: {r.text}")
    session = read_session(r.content)

    wire = []
    error = None
    with open(path, "rb") as stream:
        task = LargeFileUploadTask(session, sdk_adapter("none", token(), wire), stream)
        try:
            result = await task.upload()
        except APIError as e:
            error = e
    swallowed = len(ERRORS.records)
    last = check_drive_wire(name, wire, size)
    print(f"  {name} ({conflict}): {len(wire)} PUTs, ended by {last['status']}; "
          f"{swallowed} errors logged and swallowed by the task", flush=True)
    entry = {"file": path, "conflict": conflict, "size": size, "status": last["status"],
             "error": None, "item": None, "puts": len(wire),
             "statuses": [e["status"] for e in wire], "swallowed": swallowed}
    if error is not None:
        # The task logs the first refusal and goes on, then raises the second.
        if last["status"] != error.response_status_code:
            raise Failed(f"{name}: the task raised {error!r} after {last}")
        entry["error"] = json_answer(name, last)["error"]["code"]
        print(f"  {name} ({conflict}): the task raised {type(error).__name__}: {error}")
        ERRORS.records.clear()
        read_back = drive_path
    else:
        if swallowed:
            raise Failed(f"{name}: the SDK logged errors it then ignored")
        if not isinstance(result.item_response, bytes):
            raise Failed(f"{name}: the task's item_response is {result.item_response!r}")
        item = json.loads(result.item_response)
        if item != json_answer(name, last):
            raise Failed(f"{name}: the task's item_response is not the completing answer")
        hashes = item.get("file", {}).get("hashes", {})
        parent = item.get("parentReference", {}).get("path", "")
        entry["item"] = {"id": item["id"], "name": item["name"], "size": item["size"],
                         "parent": parent, "quickXorHash": hashes.get("quickXorHash"),
                         "sha256Hash": hashes.get("sha256Hash")}
        if item["size"] != size:
            raise Failed(f"{name}: the driveItem's size is {item['size']}, the file's {size}")
        if hashes.get("quickXorHash") != quick:
            raise Failed(f"{name}: quickXorHash {hashes.get('quickXorHash')}, the file's {quick}")
        if hashes.get("sha256Hash") != sha256.upper():
            raise Failed(f"{name}: sha256Hash {hashes.get('sha256Hash')}, the file's "
                         f"{sha256.upper()}")
        if not parent.startswith("/drive/root:"):
            raise Failed(f"{name}: parentReference.path {parent!r}")
        read_back = f"{parent.removeprefix('/drive/root:')}/{item['name']}"

    r = await http.get(content_url(base, read_back), headers=headers)
    if r.status_code != 200:
        raise Failed(f"{name}: GET {content_url(base, read_back)} answered {r.status_code}")
    entry["content_size"] = len(r.content)
    entry["content_sha256"] = hashlib.sha256(r.content).hexdigest()
    if error is None and (len(r.content), entry["content_sha256"]) != (size, sha256):
        raise Failed(f"{name}: {read_back} has {len(r.content)} B with SHA-256 "
                     f"{entry['content_sha256']}, the file {size} B with SHA-256 {sha256}")
    print(f"  {name} ({conflict}): {read_back} holds {len(r.content)} B, SHA-256 "
          f"{entry['content_sha256']}", flush=True)
    return entry


async def main(argv):
    args = argv[1:]
    if len(args) < 3:
        raise Failed(__doc__)
    check_vectors()
    base, drive_path = args[0].rstrip("/"), args[1].strip("/")
    results = []
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.get(f"{base}/me/drive", headers={"Authorization": f"Bearer {token()}"})
        if r.status_code != 200:
            raise Failed(f"GET /me/drive answered {r.status_code}: {r.text}")
        drive_id = r.json()["id"]
        for arg in args[2:]:
            path, _, conflict = arg.rpartition("=")
            if not path:
                raise Failed(f"expected FILE=CONFLICT, got {arg!r}")
            results.append(await upload_one(http, base, drive_id, drive_path, path, conflict))
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    run_script(main)
