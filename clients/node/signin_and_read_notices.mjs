// An independent client: @grpc/grpc-js + @grpc/proto-loader load protos/ as they are (no
// generated code), sign a software card in over TLS with the platform CA, and read the
// resident's notices. Proof that the contract works beyond our own Python stubs.
//
//   node clients/node/signin_and_read_notices.mjs --target 127.0.0.1:50051 \
//        --ca var/pki/ca.pem --card var/pki/cards/yamada-hanako.json --pin 1234
//
// Prints one JSON object: {resident_id, municipality_code, unread_count, notices: [...]}.

import { readFileSync, writeFileSync } from "node:fs";
import { scryptSync, sign, timingSafeEqual, randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { parseArgs } from "node:util";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protos = path.resolve(here, "../../protos");

const { values: args } = parseArgs({
  options: {
    target: { type: "string", default: "127.0.0.1:50051" },
    ca: { type: "string" },
    card: { type: "string" },
    pin: { type: "string" },
  },
});
for (const name of ["ca", "card", "pin"]) {
  if (!args[name]) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
}

// The software card keeps a scrypt hash of its PIN and a failure counter; three wrong PINs lock it.
function unlockAuthKey(cardPath, pin) {
  const card = JSON.parse(readFileSync(cardPath, "utf8"));
  const part = card.auth;
  if (Number(part.failures) >= 3) throw new Error("card locked");
  const { scrypt, salt, hash } = part.secret;
  const digest = scryptSync(Buffer.from(pin), Buffer.from(salt, "base64"), 32, {
    N: scrypt.n, r: scrypt.r, p: scrypt.p, maxmem: 64 * 1024 * 1024,
  });
  const ok = timingSafeEqual(digest, Buffer.from(hash, "base64"));
  part.failures = ok ? 0 : Number(part.failures) + 1;
  writeFileSync(cardPath, JSON.stringify(card, null, 2));
  if (!ok) throw new Error(`wrong PIN (${3 - part.failures} tries left)`);
  return { key: part.key, certificatePem: part.certificate };
}

function pemToDer(pem) {
  const body = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return Buffer.from(body, "base64");
}

function load(file, pkg) {
  const definition = protoLoader.loadSync(path.join(protos, file), {
    includeDirs: [protos], keepCase: true, longs: String, enums: String, defaults: true,
  });
  return pkg.split(".").reduce((o, k) => o[k], grpc.loadPackageDefinition(definition));
}

const call = (client, method, request, metadata = new grpc.Metadata()) =>
  new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (err, reply) =>
      err ? reject(err) : resolve(reply)));

async function main() {
  const credentials = grpc.credentials.createSsl(readFileSync(args.ca));
  const auth = load("onestop/auth/v1/auth.proto", "onestop.auth.v1");
  const notification = load("onestop/notification/v1/notification.proto", "onestop.notification.v1");
  // The development server certificate names localhost (and 127.0.0.1); checking against the name
  // keeps Node from sending an IP address as the TLS server name.
  const options = { "grpc.ssl_target_name_override": "localhost" };
  const authClient = new auth.AuthService(args.target, credentials, options);
  const noticeClient = new notification.NotificationService(args.target, credentials, options);

  const { key, certificatePem } = unlockAuthKey(args.card, args.pin);
  const challenge = await call(authClient, "CreateChallenge", {});
  const signature = sign("sha256", challenge.nonce, key); // RSA PKCS#1 v1.5, SHA-256
  const signedIn = await call(authClient, "SignIn", {
    request_id: randomUUID(),
    challenge_id: challenge.challenge_id,
    certificate: pemToDer(certificatePem),
    signature,
  });
  const bearer = new grpc.Metadata();
  bearer.set("authorization", `Bearer ${signedIn.session.access_token}`);
  const me = await call(authClient, "WhoAmI", {}, bearer);
  const inbox = await call(noticeClient, "ListNotices", { page_size: 20 }, bearer);
  console.log(JSON.stringify({
    resident_id: me.resident_id,
    municipality_code: me.municipality_code,
    unread_count: Number(inbox.unread_count),
    notices: inbox.notices.map((n) => ({ id: n.notice_id, title: n.title })),
  }));
  authClient.close();
  noticeClient.close();
}

main().catch((err) => {
  console.error(err.details ?? err.message);
  process.exit(1);
});
