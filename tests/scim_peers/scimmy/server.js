// SCIMMY + scimmy-routers on express: a SCIM 2.0 peer for jml's tests, on loopback.
//
//   node server.js PORT [TOKEN]       (TOKEN also from $SCIM_TOKEN; default "test-scim-token")
//
// Base URL: http://127.0.0.1:PORT/scim/v2/
//
// Only storage is ours: two in-memory Maps behind SCIMMY's ingress/egress/degress handlers,
// written the way SCIMMY's documentation and the scimmy-routers example write them (filter with
// the resource's own SCIMMY.Types.Filter; 404 and 409 as SCIMMY.Types.Error). Filtering, PATCH,
// pagination, attribute projection, schema validation and error bodies are SCIMMY's own code.
import crypto from "node:crypto";
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";

const port = Number(process.argv[2] || process.env.PORT || 0);
const token = process.argv[3] || process.env.SCIM_TOKEN || "test-scim-token";
if (!Number.isInteger(port) || port <= 0) {
    console.error("usage: node server.js PORT [TOKEN]");
    process.exit(2);
}

// SCIMMY hands the ingress handler a schema instance; keep a plain JSON copy of it.
const plain = (instance) => JSON.parse(JSON.stringify(instance));

function declareStore(Resource, kind, uniqueAttr) {
    const rows = new Map(); // id -> stored resource (plain object, meta included)

    const find = (id) => {
        const row = rows.get(id);
        if (!row) throw new SCIMMY.Types.Error(404, null, `${kind} ${id} not found`);
        return row;
    };

    return SCIMMY.Resources.declare(Resource, {
        egress: (resource) => {
            if (resource.id) return find(resource.id);
            const all = [...rows.values()];
            return resource.filter ? resource.filter.match(all) : all;
        },
        ingress: (resource, instance) => {
            const data = plain(instance);
            delete data.schemas;
            delete data.meta;
            delete data.id;
            // A unique index on userName / displayName, as a database would have one.
            const key = String(data[uniqueAttr] ?? "").toLowerCase();
            for (const row of rows.values()) {
                if (row.id !== resource.id && String(row[uniqueAttr] ?? "").toLowerCase() === key)
                    throw new SCIMMY.Types.Error(409, "uniqueness", `${uniqueAttr} ${data[uniqueAttr]} already exists`);
            }
            const now = new Date().toISOString();
            if (resource.id) {
                const old = find(resource.id);
                const row = {...data, id: old.id, meta: {...old.meta, lastModified: now}};
                rows.set(old.id, row);
                return row;
            }
            const id = crypto.randomUUID();
            const row = {...data, id, meta: {created: now, lastModified: now}};
            rows.set(id, row);
            return row;
        },
        degress: (resource) => {
            find(resource.id);
            rows.delete(resource.id);
        },
    });
}

declareStore(SCIMMY.Resources.User, "User", "userName");
declareStore(SCIMMY.Resources.Group, "Group", "displayName");

const app = express();
app.use("/scim/v2", new SCIMMYRouters({
    type: "bearer",
    docUri: "https://example.invalid/scim-peer-auth",
    handler: (request) => {
        const given = request.header("Authorization")?.match(/^Bearer\s+(.+)$/)?.[1];
        if (given !== token) throw new Error("Invalid bearer token");
        return "jml-test-client";
    },
}));

const server = app.listen(port, "127.0.0.1", () => {
    console.log(JSON.stringify({url: `http://127.0.0.1:${port}/scim/v2/`, token}));
});
const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // idle keep-alive clients must not hold the exit
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
