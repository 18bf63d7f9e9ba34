// Uploads files to an `upsession serve` with the official Microsoft Graph JavaScript
// SDK (@microsoft/microsoft-graph-client, pinned in js/package-lock.json).
//
// The draft, the upload session and the fragments all go through the SDK, unchanged
// and at its defaults: `Client.init` with `customHosts` naming the Graph host
// (localhost here, as graph.microsoft.com would be), `LargeFileUploadTask.
// createUploadSession`, and `LargeFileUploadTask` with a `FileUpload` at its default
// range size (5 MiB). The uploadUrl is on another host (127.0.0.1), so the SDK sends
// no token to it, as with real Graph. Only the download that checks the bytes uses
// plain fetch.
//
// Usage: node msgraph_upload.cjs GRAPH_BASE [--resume] FILE...
//   GRAPH_BASE  e.g. https://localhost:PORT/v1.0; the bearer token is in
//               UPSESSION_TOKEN; the SDK is found through NODE_PATH; the server's
//               certificate through NODE_EXTRA_CA_CERTS.
//   --resume    the server may be killed mid-upload: when the task fails, call the
//               SDK's `resume()` (which asks the session with GET) until the server
//               is back.
//
// Every HTTP exchange the SDK makes is logged by a wrapper around the global fetch
// (which only observes), and each answered fragment is printed at once as
// `ANSWERED STATUS RANGE` (a test may kill the server on it). The script exits 0 only
// if every attachment, downloaded with `GET {Location}/$value`, has the file's
// SHA-256 and the wire answers are those docs/PROTOCOL.md promises. Its last stdout
// line is `RESULT {json}`.
//
// msgraph_drive_upload.cjs requires its client, wire log and checks (module.exports);
// the uploads run only when this file is the one node was given.

"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const RESUME_WAIT_MS = 90_000;

class Failed extends Error {}

const wire = [];

function redact(url) {
	const u = new URL(url);
	if (u.search) u.search = "?…";
	return u.toString();
}

// Observe every request the SDK makes; the answer is passed on untouched.
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
	const url = typeof input === "string" ? input : input.url;
	const headers = new Headers(init.headers || {});
	const entry = {
		method: (init.method || "GET").toUpperCase(),
		url: redact(url),
		content_range: headers.get("content-range"),
		length: init.body ? (init.body.length ?? init.body.byteLength ?? null) : null,
		authorization: headers.has("authorization"),
		status: null,
	};
	wire.push(entry);
	const res = await realFetch(input, init);
	entry.status = res.status;
	entry.content_type = res.headers.get("content-type");
	entry.location = res.headers.get("location");
	entry.body = await res.clone().text();
	if (entry.method === "PUT") {
		console.log(`ANSWERED ${res.status} ${entry.content_range}`);
	}
	return res;
};

const { Client, FileUpload, LargeFileUploadTask } = require("@microsoft/microsoft-graph-client");

function sha256(data) {
	return crypto.createHash("sha256").update(data).digest("hex");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Prints the `i`-th fragment exchange; the SDK must have sent no token with it.
function show(name, i, e) {
	console.log(
		`  ${name} #${i}: ${e.method} ${e.content_range} (${e.length} B, Authorization: ` +
			`${e.authorization ? "yes" : "no"}) -> ${e.status} ${e.content_type || "-"} ` +
			`${JSON.stringify((e.body || "").slice(0, 120))}` +
			(e.location ? ` Location: ${e.location}` : ""),
	);
	if (e.authorization) throw new Failed(`${name}: the SDK sent a token to the uploadUrl`);
}

// An answer's body, which must be application/json.
function jsonAnswer(name, e) {
	if ((e.content_type || "").split(";")[0].trim() !== "application/json") {
		throw new Failed(`${name}: a ${e.status} answer is not application/json`);
	}
	return JSON.parse(e.body);
}

// A fragment answer that asks for more: JSON, no id, closed ranges only.
function checkProgress(name, e) {
	const body = jsonAnswer(name, e);
	if ("id" in body) throw new Failed(`${name}: a ${e.status} fragment answer has an id`);
	for (const r of body.nextExpectedRanges || []) {
		if (!/^\d+-\d+$/.test(r)) throw new Failed(`${name}: range ${r} is not closed 'a-b'`);
	}
}

// The answered fragments cover every byte from 0 to `size`, none skipped.
function checkCoverage(name, puts, size) {
	let end = 0;
	for (const e of puts) {
		if (e.status === null) continue;
		const [a, b] = e.content_range.split(" ")[1].split("/")[0].split("-").map(Number);
		if (a > end) throw new Failed(`${name}: the SDK skipped bytes ${end}..${a}`);
		end = Math.max(end, b + 1);
	}
	if (end !== size) throw new Failed(`${name}: the fragments cover ${end} of ${size} bytes`);
}

// Checks each answer to the fragments against the contract and prints the exchange.
function checkWire(name, puts, size) {
	puts.forEach((e, i) => {
		show(name, i, e);
		if (e.status === null) return; // the server was killed under it
		if (e.status === 200) {
			checkProgress(name, e);
		} else if (e.status === 201) {
			if (!e.location) throw new Failed(`${name}: 201 without Location`);
			if (e.body || e.content_type) throw new Failed(`${name}: 201 with a body or Content-Type`);
		} else {
			throw new Failed(`${name}: the SDK saw an unexpected answer: ${JSON.stringify(e)}`);
		}
	});
	const created = puts.filter((e) => e.status === 201);
	if (created.length === 0) throw new Failed(`${name}: no fragment was answered 201`);
	checkCoverage(name, puts, size);
	return created[0].location;
}

async function uploadOne(client, base, token, file, resume) {
	const name = path.basename(file);
	const data = fs.readFileSync(file);
	const size = data.length;
	const draft = await client.api("/me/messages").post({ subject: `SDK ${name}` });
	const payload = {
		AttachmentItem: { attachmentType: "file", name, size, contentType: "application/octet-stream" },
	};
	const session = await LargeFileUploadTask.createUploadSession(
		client,
		`${base}/me/messages/${draft.id}/attachments/createUploadSession`,
		payload,
	);
	const first = wire.length;
	const task = new LargeFileUploadTask(client, new FileUpload(data, name, size), session);
	let result;
	let interruptions = 0;
	try {
		result = await task.upload();
	} catch (error) {
		if (!resume) throw error;
		interruptions += 1;
		console.log(`INTERRUPTED ${error.name}: ${error.message}`);
		const deadline = Date.now() + RESUME_WAIT_MS;
		for (;;) {
			try {
				result = await task.resume();
				break;
			} catch (again) {
				if (Date.now() > deadline) throw again;
				await sleep(200);
			}
		}
		console.log("RESUMED");
	}
	if (resume && interruptions === 0) throw new Failed(`${name}: --resume, but never interrupted`);
	const puts = wire.slice(first).filter((e) => e.method === "PUT");
	const location = checkWire(name, puts, size);
	if (result.location !== location) {
		throw new Failed(`${name}: UploadResult.location ${result.location} is not ${location}`);
	}
	const res = await fetch(`${location}/$value`, { headers: { Authorization: `Bearer ${token}` } });
	const bytes = Buffer.from(await res.arrayBuffer());
	const want = sha256(data);
	const got = sha256(bytes);
	if (res.status !== 200 || bytes.length !== size || got !== want) {
		throw new Failed(`${name}: downloaded ${res.status}, ${bytes.length} B, SHA-256 ${got}; want ${want}`);
	}
	console.log(`  ${name}: OK, ${size} B, SHA-256 ${got}`);
	return {
		file,
		size,
		sha256: got,
		location,
		puts: puts.length,
		puts_after_201: puts.length - 1 - puts.findIndex((e) => e.status === 201),
		interruptions,
		statuses: puts.map((e) => e.status),
	};
}

// The bearer token, from UPSESSION_TOKEN.
function token() {
	const value = process.env.UPSESSION_TOKEN;
	if (!value) throw new Failed("UPSESSION_TOKEN is not set");
	return value;
}

// The SDK's client for the Graph routes under `base` (its host a custom host, which
// gets the token, as graph.microsoft.com would).
function graphClient(base) {
	const bearer = token();
	return Client.init({
		authProvider: (done) => done(null, bearer),
		baseUrl: `${new URL(base).origin}/`,
		defaultVersion: "v1.0",
		customHosts: new Set([new URL(base).hostname]),
	});
}

// Runs `main(argv)`; a failure is printed as `FAILED: …` on stderr, exit code 1.
function runScript(main) {
	main(process.argv).catch((error) => {
		if (!(error instanceof Failed)) console.error(error);
		console.error(`FAILED: ${error.name}: ${error.message}`);
		process.exit(1);
	});
}

async function main(argv) {
	let args = argv.slice(2);
	const resume = args.includes("--resume");
	args = args.filter((a) => a !== "--resume");
	if (args.length < 2) throw new Failed("usage: msgraph_upload.cjs GRAPH_BASE [--resume] FILE...");
	const base = args[0].replace(/\/+$/, "");
	const client = graphClient(base);
	const results = [];
	for (const file of args.slice(1)) {
		results.push(await uploadOne(client, base, token(), file, resume));
	}
	console.log(`RESULT ${JSON.stringify(results)}`);
}

module.exports = {
	Failed,
	checkCoverage,
	checkProgress,
	graphClient,
	jsonAnswer,
	runScript,
	sha256,
	show,
	token,
	wire,
};

if (require.main === module) runScript(main);
