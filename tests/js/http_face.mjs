// A worker's view of the HTTP face, with only Node.js's built-in fetch.
// Usage: node http_face.mjs BASE_URL [SECRET]; exits 0 when every check holds.
import assert from "node:assert/strict";

const [base, secret] = process.argv.slice(2);
const auth = secret ? { Authorization: `Bearer ${secret}` } : {};
const call = (path, init = {}) => fetch(base + path, { ...init, headers: { ...auth, ...(init.headers || {}) } });

// a string value with metadata and a ttl
let r = await call("/v1/kv/" + encodeURIComponent("js:greeting/é"), {
  method: "PUT",
  body: "hello from node",
  headers: { "Content-Type": "text/plain", "X-Crdtkv-Metadata": JSON.stringify({ lang: "js" }) },
});
assert.equal(r.status, 204);
r = await call("/v1/kv/" + encodeURIComponent("js:greeting/é"));
assert.equal(r.status, 200);
assert.equal(r.headers.get("content-type"), "text/plain; charset=utf-8");
assert.equal(await r.text(), "hello from node");
assert.deepEqual(JSON.parse(r.headers.get("x-crdtkv-metadata")), { lang: "js" });

// JSON and bytes
r = await call("/v1/kv/js:doc?ttl=600", { method: "PUT", body: JSON.stringify({ n: [1, 2] }), headers: { "Content-Type": "application/json" } });
assert.equal(r.status, 204);
r = await call("/v1/kv/js:doc");
assert.deepEqual(await r.json(), { n: [1, 2] });
assert.ok(Number(r.headers.get("x-crdtkv-expiration")) > Date.now() / 1000);
r = await call("/v1/kv/js:bytes", { method: "PUT", body: new Uint8Array([0, 255, 7]) });
assert.equal(r.status, 204);
r = await call("/v1/kv/js:bytes");
assert.equal(r.headers.get("content-type"), "application/octet-stream");
assert.deepEqual([...new Uint8Array(await r.arrayBuffer())], [0, 255, 7]);

// counters, listing, rate limits, errors
r = await call("/v1/incr/js:views?by=5", { method: "POST" });
assert.deepEqual(await r.json(), { value: 5 });
r = await call("/v1/incr/js:doc", { method: "POST" });
assert.equal(r.status, 409);
assert.equal((await r.json()).error, "WrongType");
r = await call("/v1/keys?prefix=js:&limit=2");
let page = await r.json();
assert.equal(page.keys.length, 2);
assert.equal(page.list_complete, false);
r = await call("/v1/keys?prefix=js:&cursor=" + encodeURIComponent(page.cursor));
page = await r.json();
assert.equal(page.list_complete, true);
assert.equal(page.cursor, null);
r = await call("/v1/ratelimit/js:api?limit=1&window=60", { method: "POST" });
assert.equal(r.status, 200);
r = await call("/v1/ratelimit/js:api?limit=1&window=60", { method: "POST" });
assert.equal(r.status, 429);
assert.equal((await r.json()).allowed, false);
r = await call("/v1/kv/js:missing");
assert.equal(r.status, 404);
assert.equal((await r.json()).error, "NotFound");

// a watch: the change made after the stream opened arrives as an event
const controller = new AbortController();
r = await call("/v1/watch?prefix=js:w", { signal: controller.signal });
assert.equal(r.headers.get("content-type"), "text/event-stream");
const reader = r.body.getReader();
const decoder = new TextDecoder();
let text = "";
while (!text.includes(": watching")) text += decoder.decode((await reader.read()).value, { stream: true });
await call("/v1/kv/js:w1", { method: "PUT", body: "v1", headers: { "Content-Type": "text/plain" } });
while (!text.includes("\n\ndata: ") && !text.startsWith("data: ")) {
  text += decoder.decode((await reader.read()).value, { stream: true });
  if (/data: .*\n\n/.test(text)) break;
}
const event = JSON.parse(text.match(/data: (.*)\n\n/)[1]);
assert.equal(event.key, "js:w1");
assert.equal(event.value, "v1");
assert.equal(event.deleted, false);
controller.abort();

// without the secret, a node that has one refuses
if (secret) {
  r = await fetch(base + "/v1/kv/js:doc");
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error, "NotAuthenticated");
  r = await fetch(base + "/healthz");
  assert.equal(r.status, 200);
}
console.log("ok");
