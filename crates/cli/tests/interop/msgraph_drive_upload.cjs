// Uploads files to a OneDrive path of an `upsession serve` with the official Microsoft
// Graph JavaScript SDK (@microsoft/microsoft-graph-client, pinned in
// js/package-lock.json), one conflict behaviour at a time.
//
// The session and the fragments go through the SDK's own OneDrive task, unchanged and
// at its defaults: `OneDriveLargeFileUploadTask.create(client, bytes, {fileName, path,
// conflictBehavior})` posts `{item: {"@microsoft.graph.conflictBehavior", name}}` to
// `/me/drive/root:/{path}/{fileName}:/createUploadSession` (each name
// percent-encoded) and uploads in its default 5 MiB ranges. The client and the wire
// log are msgraph_upload.cjs's: the Graph routes on a custom host (localhost), the
// uploadUrl on 127.0.0.1, which gets no token. Only the read-back uses plain fetch.
//
// Usage: node msgraph_drive_upload.cjs GRAPH_BASE DRIVE_PATH FILE=CONFLICT...
//   GRAPH_BASE  e.g. https://localhost:PORT/v1.0; the bearer token is in
//               UPSESSION_TOKEN; the SDK is found through NODE_PATH; the server's
//               certificate through NODE_EXTRA_CA_CERTS.
//   DRIVE_PATH  where each file goes, e.g. `Uploads/big file #1.bin`.
//   CONFLICT    fail, replace or rename.
//
// Each upload either completes (201, or 200 with an id: the task's own test) or ends
// in a Graph error, which the task throws (its body), as under `fail` with the name
// taken: 409 nameAlreadyExists; both are reported. A completed upload must carry the
// file's size, its `quickXorHash` (computed here, and checked against Microsoft's
// published vectors first) and `sha256Hash`, and its content, read back with
// `GET …/root:/{parentReference.path}/{name}:/content`, must be the file's bytes.
// After an error the requested path's content is read back and reported. The script
// exits 0 only if all of that holds; its last stdout line is `RESULT {json}`.

"use strict";

const fs = require("node:fs");
const path = require("node:path");

// The client, the wire log and its checks are the attachment script's.
const shared = require("./msgraph_upload.cjs");
const { Failed, sha256, wire } = shared;
const { OneDriveLargeFileUploadTask } = require("@microsoft/microsoft-graph-client");

// QuickXorHash, as Microsoft describes it: a 160-bit ring; byte i is XORed in at bit
// (i * 11) mod 160, then the length (64 bits, little-endian) into the last 8 bytes.
const WIDTH = 160;
const SHIFT = 11;
// Published test vectors (input → hash, both base64).
const VECTORS = {
	"": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	"Sg==": "SgAAAAAAAAAAAAAAAQAAAAAAAAA=",
	"tbQ=": "taAFAAAAAAAAAAAAAgAAAAAAAAA=",
	"/aNzzCFPS/A=": "/RjFHJgRgicsAR4ACAAAAAAAAAA=",
};

function quickXor(data) {
	// Bytes 160 apart land on the same bit (11 and 160 are coprime): fold the data
	// into 160 lanes first, each the XOR of its bytes k, k + 160, ….
	const lanes = new Uint8Array(WIDTH);
	const rows = data.length - (data.length % WIDTH);
	for (let row = 0; row < rows; row += WIDTH) {
		for (let k = 0; k < WIDTH; k++) lanes[k] ^= data[row + k];
	}
	for (let i = rows; i < data.length; i++) lanes[i - rows] ^= data[i];
	const state = new Uint8Array(WIDTH / 8);
	lanes.forEach((b, k) => {
		const bit = (k * SHIFT) % WIDTH;
		const [i, o] = [bit >> 3, bit & 7];
		state[i] ^= (b << o) & 0xff;
		if (o) state[(i + 1) % state.length] ^= b >> (8 - o);
	});
	const length = Buffer.alloc(8);
	length.writeBigUInt64LE(BigInt(data.length));
	length.forEach((b, i) => {
		state[state.length - 8 + i] ^= b;
	});
	return Buffer.from(state).toString("base64");
}

function checkVectors() {
	for (const [given, want] of Object.entries(VECTORS)) {
		const got = quickXor(Buffer.from(given, "base64"));
		if (got !== want) throw new Failed(`QuickXorHash(${given}) is ${got}, the vector ${want}`);
	}
}

// `…/me/drive/root:/{path}:/content`, each name percent-encoded.
function contentUrl(base, drivePath) {
	const names = drivePath.split("/").filter((n) => n !== "");
	return `${base}/me/drive/root:/${names.map(encodeURIComponent).join("/")}:/content`;
}

// Checks and prints each fragment answer: 202 while bytes are missing, then the
// driveItem (201 or 200) or a Graph error that ends the upload, which the task must
// not follow with another fragment. Returns the answer that ended it.
function checkDriveWire(name, puts, size) {
	let done = null;
	puts.forEach((e, i) => {
		shared.show(name, i, e);
		if (done !== null) throw new Failed(`${name}: a fragment after the upload ended`);
		if (e.status === 202) {
			shared.checkProgress(name, e);
		} else if (e.status === 200 || e.status === 201) {
			if (!("id" in shared.jsonAnswer(name, e))) throw new Failed(`${name}: ${e.status} without an id`);
			done = e;
		} else if (e.status >= 400 && "error" in shared.jsonAnswer(name, e)) {
			done = e;
		} else {
			throw new Failed(`${name}: the SDK saw an unexpected answer: ${JSON.stringify(e)}`);
		}
	});
	if (done === null) throw new Failed(`${name}: no answer completed or ended the upload`);
	if (done.status < 400) shared.checkCoverage(name, puts, size);
	return done;
}

async function uploadOne(client, base, drivePath, file, conflict) {
	const name = path.basename(file);
	const data = fs.readFileSync(file);
	const [size, sha, quick] = [data.length, sha256(data), quickXor(data)];
	const folder = path.posix.dirname(drivePath);
	const first = wire.length;
	const task = await OneDriveLargeFileUploadTask.create(client, data, {
		fileName: path.posix.basename(drivePath),
		path: folder === "." ? "/" : folder,
		conflictBehavior: conflict,
	});
	let result = null;
	let error = null;
	try {
		result = await task.upload();
	} catch (thrown) {
		// A Graph error answer is thrown as its parsed body.
		if (!thrown || !thrown.error || !thrown.error.code) throw thrown;
		error = thrown.error;
	}
	const exchanges = wire.slice(first);
	const puts = exchanges.filter((e) => e.method === "PUT");
	const last = checkDriveWire(name, puts, size);
	console.log(
		`  ${name} (${conflict}): ${exchanges[0].method} ${exchanges[0].url} -> ` +
			`${exchanges[0].status}; ${puts.length} PUTs, ended by ${last.status}`,
	);
	const entry = {
		file,
		conflict,
		size,
		status: last.status,
		error: null,
		item: null,
		puts: puts.length,
		statuses: puts.map((e) => e.status),
	};
	let readBack = drivePath;
	if (error !== null) {
		if (shared.jsonAnswer(name, last).error.code !== error.code) {
			throw new Failed(`${name}: the task threw ${JSON.stringify(error)} after ${last.body}`);
		}
		entry.error = error.code;
		console.log(`  ${name} (${conflict}): the task threw ${JSON.stringify(error)}`);
	} else {
		const item = result.responseBody;
		if (JSON.stringify(item) !== JSON.stringify(shared.jsonAnswer(name, last))) {
			throw new Failed(`${name}: the task's responseBody is not the completing answer`);
		}
		const hashes = (item.file || {}).hashes || {};
		const parent = (item.parentReference || {}).path || "";
		entry.item = {
			id: item.id,
			name: item.name,
			size: item.size,
			parent,
			quickXorHash: hashes.quickXorHash,
			sha256Hash: hashes.sha256Hash,
		};
		if (item.size !== size) throw new Failed(`${name}: the driveItem's size is ${item.size}`);
		if (hashes.quickXorHash !== quick) {
			throw new Failed(`${name}: quickXorHash ${hashes.quickXorHash}, the file's ${quick}`);
		}
		if (hashes.sha256Hash !== sha.toUpperCase()) {
			throw new Failed(`${name}: sha256Hash ${hashes.sha256Hash}, the file's ${sha.toUpperCase()}`);
		}
		if (!parent.startsWith("/drive/root:")) throw new Failed(`${name}: parentReference.path ${parent}`);
		readBack = `${parent.slice("/drive/root:".length)}/${item.name}`;
	}
	const res = await fetch(contentUrl(base, readBack), { headers: { Authorization: `Bearer ${shared.token()}` } });
	const bytes = Buffer.from(await res.arrayBuffer());
	if (res.status !== 200) throw new Failed(`${name}: GET ${contentUrl(base, readBack)} answered ${res.status}`);
	entry.content_size = bytes.length;
	entry.content_sha256 = sha256(bytes);
	if (error === null && (bytes.length !== size || entry.content_sha256 !== sha)) {
		throw new Failed(`${name}: ${readBack} has ${bytes.length} B with SHA-256 ${entry.content_sha256}; want ${sha}`);
	}
	console.log(`  ${name} (${conflict}): ${readBack} holds ${bytes.length} B, SHA-256 ${entry.content_sha256}`);
	return entry;
}

async function main(argv) {
	const args = argv.slice(2);
	if (args.length < 3) throw new Failed("usage: msgraph_drive_upload.cjs GRAPH_BASE DRIVE_PATH FILE=CONFLICT...");
	checkVectors();
	const base = args[0].replace(/\/+$/, "");
	const drivePath = args[1].replace(/^\/+|\/+$/g, "");
	const client = shared.graphClient(base);
	const results = [];
	for (const arg of args.slice(2)) {
		const at = arg.lastIndexOf("=");
		if (at <= 0) throw new Failed(`expected FILE=CONFLICT, got ${arg}`);
		results.push(await uploadOne(client, base, drivePath, arg.slice(0, at), arg.slice(at + 1)));
	}
	console.log(`RESULT ${JSON.stringify(results)}`);
}

shared.runScript(main);
