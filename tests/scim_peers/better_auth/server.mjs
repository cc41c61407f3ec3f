// A minimal Better Auth app with the @better-auth/scim plugin: a SCIM 2.0 peer for jml's tests.
//
//   node server.mjs PORT
//
// Storage is Better Auth's own memory adapter (no native module). At startup the app asks the
// plugin for a managed SCIM connection (auth.api.createSCIMManagedConnection, a server-only
// endpoint): the plugin generates the bearer token and keeps only its HMAC digest. The token and
// the SCIM base URL are printed as one JSON line on stdout: {"url": ..., "token": ...}.
// Everything under /api/auth/scim/v2/ is the plugin's own code.
import crypto from "node:crypto";
import http from "node:http";
import { betterAuth } from "better-auth";
import { getAuthTables } from "better-auth/db";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { scim } from "@better-auth/scim";

const port = Number(process.argv[2] || process.env.PORT || 0);
if (!Number.isInteger(port) || port <= 0) {
    console.error("usage: node server.mjs PORT");
    process.exit(2);
}
const baseURL = `http://127.0.0.1:${port}`;

// The memory adapter wants every table (core and plugin) to exist as an empty array.
const db = {};
const options = {
    baseURL,
    secret: crypto.randomBytes(32).toString("hex"),
    database: memoryAdapter(db),
    telemetry: { enabled: false },
    plugins: [
        scim({
            connections: [],
            managedConnections: { credentialHashSecret: crypto.randomBytes(32).toString("hex") },
        }),
    ],
};
for (const table of Object.values(getAuthTables(options))) db[table.modelName] = [];
const auth = betterAuth(options);

const { token } = await auth.api.createSCIMManagedConnection({
    body: {
        scopes: ["scim.users.read", "scim.users.write", "scim.groups.read", "scim.groups.write"],
        expiresAt: new Date(Date.now() + 24 * 3600 * 1000),
        creationRequestId: crypto.randomUUID(),
        provisioningDomainId: "jml-tests",
        actorId: "jml-test-launcher",
    },
});

const server = http.createServer(toNodeHandler(auth));
server.listen(port, "127.0.0.1", () => {
    console.log(JSON.stringify({ url: `${baseURL}/api/auth/scim/v2/`, token }));
});
const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // idle keep-alive clients must not hold the exit
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
