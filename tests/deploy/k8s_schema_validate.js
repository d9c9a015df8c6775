#!/usr/bin/env node
// Validates rendered Kubernetes manifests offline against the Kubernetes OpenAPI
// schemas (and the Prometheus Operator CRDs), in two independent ways:
//   1. kubernetes-models' validators compiled from the OpenAPI schemas: types,
//      required fields, formats (int32, quantities...), enums;
//   2. the same schemas' TypeScript types: every object becomes a typed literal and
//      `tsc --strict` rejects unknown fields (what `kubectl --validate=strict` does).
// Before that it checks itself: objects with a wrong type and with a misspelt field
// must be rejected, so a validator that accepts everything fails the test.
//
//   node k8s_schema_validate.js NODE_DIR RENDERED.yaml...
// NODE_DIR holds node_modules (tests/deploy/k8s_npm_setup.sh). Exit 0 = all valid.
"use strict";
const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const { pathToFileURL } = require("url");

const nodeDir = path.resolve(process.argv[2]);
const files = process.argv.slice(3);
const req = (m) => require(require.resolve(m, { paths: [nodeDir] }));
const YAML = req("yaml");

// apiVersion -> module path prefix of its models.
function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

// The model class of an object's kind. The CRD packages are ES modules that export
// only their group/version index: those are imported from the file.
async function loadModel(obj) {
  const mod = modulePath(obj.apiVersion, obj.kind);
  if (mod.startsWith("kubernetes-models/")) return req(mod)[obj.kind];
  const index = path.join(nodeDir, "node_modules", path.dirname(mod), "index.js");
  return (await import(pathToFileURL(index).href))[obj.kind];
}

async function schemaErrors(obj) {
  let Model;
  try {
    Model = await loadModel(obj);
  } catch (e) {
    return [`no schema for ${obj.apiVersion} ${obj.kind}: ${e.message}`];
  }
  if (!Model) return [`no model ${obj.kind} in ${obj.apiVersion}`];
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    return [e.message];
  }
}

// One TypeScript file per group of objects, each object a typed literal; one tsc run
// over all the files (its start-up dominates). Returns {tag: [error lines]}.
function typeErrors(groups) {
  const fileOf = {};
  for (const [tag, objs] of Object.entries(groups)) {
    const lines = [];
    const imports = new Map();
    objs.forEach((o, i) => {
      const mod = modulePath(o.apiVersion, o.kind);
      if (!imports.has(mod)) imports.set(mod, `I${o.kind}_${imports.size}`);
      lines.push(`export const o${i}: ${imports.get(mod)} = ${JSON.stringify(o, null, 1)};`);
    });
    const head = [...imports].map(([mod, alias]) =>
      `import type { I${mod.split("/").pop()} as ${alias} } from "${mod}";`);
    fileOf[tag] = path.join(nodeDir, `check_${tag}.ts`);
    fs.writeFileSync(fileOf[tag], head.concat(lines).join("\n") + "\n");
  }
  let out = "";
  try {
    execFileSync(path.join(nodeDir, "node_modules", ".bin", "tsc"),
                 ["--noEmit", "--strict", "--skipLibCheck", "--module", "commonjs",
                  "--moduleResolution", "node", "--target", "es2020", ...Object.values(fileOf)],
                 { cwd: nodeDir, encoding: "utf8", stdio: "pipe" });
  } catch (e) {
    out = e.stdout || e.message;
  }
  const errors = {};
  for (const tag of Object.keys(groups)) {
    errors[tag] = out.split("\n").filter(
      (l) => l.includes("error") && l.startsWith(`check_${tag}.ts`));
  }
  const unattributed = out.split("\n").filter(
    (l) => l.includes("error") && !Object.keys(groups).some((t) => l.startsWith(`check_${t}.ts`)));
  if (unattributed.length) errors["(tsc)"] = unattributed;
  return errors;
}

let failed = 0;
function fail(msg) { console.log(`FAIL ${msg}`); failed++; }

// Self-check: a wrong type and an unknown field must both be caught.
const good = {
  apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" },
  spec: { selector: { matchLabels: { a: "b" } },
          template: { metadata: { labels: { a: "b" } },
                      spec: { containers: [{ name: "c", image: "i",
                                             ports: [{ containerPort: 80 }] }] } } },
};
const wrongType = JSON.parse(JSON.stringify(good));
wrongType.spec.template.spec.containers[0].ports[0].containerPort = "eighty";
const unknownField = JSON.parse(JSON.stringify(good));
unknownField.spec.template.spec.containers[0].readinesProbe = { grpc: { port: 80 } };
async function main() {
  const docs = {};
  for (const f of files) {
    docs[path.basename(f, ".yaml")] = YAML.parseAllDocuments(fs.readFileSync(f, "utf8"))
      .map((d) => d.toJSON()).filter((o) => o);
  }
  const types = typeErrors({ self_good: [good], self_unknown: [unknownField], ...docs });
  // Self-check: a valid object passes both; a wrong type and an unknown field are caught.
  if ((await schemaErrors(good)).length || types.self_good.length) {
    fail("self-check: a valid Deployment was rejected: " + types.self_good.join("; "));
  }
  if (!(await schemaErrors(wrongType)).length) fail("self-check: containerPort 'eighty' was accepted");
  if (!types.self_unknown.some((l) => l.includes("readinesProbe"))) {
    fail("self-check: the misspelt field readinesProbe was accepted");
  }
  for (const e of types["(tsc)"] || []) fail(`tsc: ${e}`);
  for (const f of files) {
    const tag = path.basename(f, ".yaml");
    const objs = docs[tag];
    if (!objs.length) fail(`${f}: no objects`);
    for (const o of objs) {
      for (const e of await schemaErrors(o)) fail(`${f}: ${o.kind}/${o.metadata && o.metadata.name}: ${e}`);
    }
    for (const e of types[tag]) fail(`${f}: ${e}`);
    console.log(`${f}: ${objs.length} objects (${objs.map((o) => o.kind).join(", ")})`);
  }
  console.log(failed ? `${failed} problem(s)` : "all objects valid");
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.log(`FAIL ${e.stack}`); process.exit(1); });
