// Verify a reply-tracker webhook signature in Node.js (18 or newer), with no dependencies.
//
// Copy `verify` into your receiver and pass it the raw body as a Buffer, before
// any JSON parsing. As a command:
//   node verify-webhook.mjs "$SIGNATURE_HEADER" "$SIGNING_KEY" < body.json
// exits 0 for a valid signature and 1 otherwise.
import { createHmac, timingSafeEqual } from "node:crypto";
import { argv, exit, stdin } from "node:process";

export function verify(header, body, secret, toleranceSeconds = 300) {
  let timestamp;
  const signatures = [];
  for (const part of header.split(",")) {
    const [key, value = ""] = part.trim().split("=", 2);
    if (key === "t") timestamp = value;
    else if (key === "v1") signatures.push(value);
  }
  if (!timestamp || !/^\d+$/.test(timestamp) || signatures.length === 0) return false;
  // A timestamp outside the tolerance is rejected, so a captured request cannot be replayed later.
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) return false;
  const expected = createHmac("sha256", secret)
    .update(Buffer.concat([Buffer.from(`${timestamp}.`), body]))
    .digest();
  return signatures.some((candidate) => {
    const given = Buffer.from(candidate, "hex");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

if (import.meta.url === `file://${argv[1]}`) {
  const chunks = [];
  for await (const chunk of stdin) chunks.push(chunk);
  exit(verify(argv[2], Buffer.concat(chunks), argv[3]) ? 0 : 1);
}
