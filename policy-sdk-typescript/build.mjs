#!/usr/bin/env node
// Builds a TypeScript Writ policy into a WebAssembly component:
//
//   node build.mjs ENTRY.ts -o OUT.wasm [--wit DIR]
//
// 1. tsc type-checks and compiles the project of ENTRY (the nearest tsconfig.json above it);
// 2. rolldown bundles the compiled entry, after this SDK's `component.js`, which installs the
//    gateway's host import, into one module;
// 3. componentize-js makes the component for the world `policy` of DIR (default: the `wit`
//    directory next to this SDK), without the HTTP interfaces, which the gateway refuses.
//
// The tools come from the directory named by WRIT_POLICY_NODE_MODULES, else from the nearest
// node_modules above ENTRY that has them. Intermediate files go to a `.writ-build-*` directory
// in the project (the bundler resolves the policy's imports from there) and are deleted.

import { spawnSync } from "node:child_process";
import { cp, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { existsSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const USAGE = "usage: node build.mjs ENTRY.ts -o OUT.wasm [--wit DIR]";
const sdk = dirname(fileURLToPath(import.meta.url));

class BuildError extends Error {}

// Thrown rather than exiting, so the intermediate files are still deleted.
function fail(message) {
  throw new BuildError(message);
}

function parseArgs(argv) {
  const args = { wit: join(sdk, "..", "wit") };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "-o" || arg === "--out") args.out = argv[++i];
    else if (arg === "--wit") args.wit = argv[++i];
    else if (arg === "-h" || arg === "--help") fail(USAGE);
    else if (args.entry === undefined && !arg.startsWith("-")) args.entry = arg;
    else fail(`unexpected argument ${arg}\n${USAGE}`);
  }
  if (!args.entry || !args.out || !args.wit) fail(USAGE);
  return { entry: resolve(args.entry), out: resolve(args.out), wit: resolve(args.wit) };
}

function ancestors(dir) {
  const dirs = [];
  for (let d = dir; ; d = dirname(d)) {
    dirs.push(d);
    if (dirname(d) === d) return dirs;
  }
}

// The first node_modules that has `relativePath`, so an author's own versions win.
function findTool(from, relativePath, packageName) {
  const env = process.env.WRIT_POLICY_NODE_MODULES;
  const candidates = env ? [env] : ancestors(from).map((d) => join(d, "node_modules"));
  for (const modules of candidates) {
    const path = join(modules, relativePath);
    if (existsSync(path)) return path;
  }
  fail(
    `${relativePath} not found in ${env ? env : `any node_modules above ${from}`}: ` +
      `npm install --save-dev ${packageName}, or set WRIT_POLICY_NODE_MODULES`,
  );
}

function run(what, command, args, cwd) {
  const result = spawnSync(command, args, { cwd, stdio: "inherit" });
  if (result.error) fail(`${what}: ${result.error.message}`);
  if (result.status !== 0) fail(`${what} failed (exit ${result.status ?? result.signal})`);
}

async function build() {
  const { entry, out, wit } = parseArgs(process.argv.slice(2));
  if (!existsSync(entry)) fail(`no such file: ${entry}`);
  if (!existsSync(join(wit, "policy.wit"))) fail(`no policy.wit in ${wit}: pass --wit DIR`);
  const project = ancestors(dirname(entry)).find((d) => existsSync(join(d, "tsconfig.json")));
  if (!project) fail(`no tsconfig.json above ${entry}`);

  const component = join(sdk, "dist", "component.js");
  if (!existsSync(component)) fail(`${component} is missing: build the SDK first (tsc -p ${sdk})`);

  // A policy that imports another copy of this SDK would never see the host installed here.
  let used;
  try {
    used = realpathSync(createRequire(join(project, "package.json")).resolve("@writ/policy"));
  } catch (e) {
    if (e.code !== "MODULE_NOT_FOUND") throw e; // the policy imports the SDK by relative path
  }
  if (used && used !== realpathSync(join(sdk, "dist", "index.js"))) {
    fail(`the policy uses ${used}: build it with that SDK's build.mjs`);
  }

  const tsc = findTool(dirname(entry), ".bin/tsc", "typescript");
  const componentizeJs = findTool(dirname(entry), ".bin/componentize-js", "@bytecodealliance/componentize-js");
  const rolldownPackage = findTool(dirname(entry), "rolldown/package.json", "rolldown");
  const { rolldown } = await import(pathToFileURL(createRequire(rolldownPackage).resolve("rolldown")).href);

  const started = performance.now();
  const work = await mkdtemp(join(project, ".writ-build-"));
  try {
    // rootDir fixed to the project, so the compiled entry's path is known whatever the tsconfig says.
    const compiled = join(work, "js");
    run("tsc", tsc, [
      "-p", project, "--outDir", compiled, "--rootDir", project,
      "--declaration", "false", "--sourceMap", "false", "--noEmit", "false",
    ], project);
    const policyJs = join(compiled, relative(project, entry)).replace(/\.([mc]?)tsx?$/, ".$1js");

    await writeFile(
      join(work, "entry.js"),
      `import ${JSON.stringify(component)};\nexport { evaluate } from ${JSON.stringify(policyJs)};\n`,
    );
    const bundle = await rolldown({
      input: join(work, "entry.js"),
      external: [/^writ:/],
      platform: "browser",
      logLevel: "warn",
    });
    await bundle.write({ file: join(work, "policy.js"), format: "esm" });
    await bundle.close();

    // componentize-js reads WIT only below its working directory.
    await cp(wit, join(work, "wit"), { recursive: true });
    run("componentize-js", componentizeJs, [
      "policy.js", "--wit", "wit", "--world-name", "policy",
      // `http` alone still leaves the fetch-event handler's wasi:http/types import.
      "--disable", "http", "fetch-event",
      "-o", "policy.wasm",
    ], work);
    await cp(join(work, "policy.wasm"), out);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const { size } = await stat(out);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`built ${out} (${(size / 2 ** 20).toFixed(1)} MiB) in ${seconds} s`);
}

try {
  await build();
} catch (e) {
  if (!(e instanceof BuildError)) throw e;
  console.error(`build.mjs: ${e.message}`);
  process.exitCode = 1;
}
