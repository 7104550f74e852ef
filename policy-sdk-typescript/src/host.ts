// Where the SDK sends log lines and usage and key-id questions. In a component, `component.ts`
// installs the gateway's import; in native tests, `@writ/policy/testing` installs a fake for the
// duration of each evaluation. Author code only ever talks to whichever is installed, so the same
// compiled module runs in both.

import type { Level, Window } from "./wit.js";

/** What the SDK needs from whoever runs a policy. */
export interface Host {
  log(level: Level, message: string): void;
  usage(counter: string, window: Window): number;
  keyId(): string;
}

// The SDK compiles without Node or DOM types; every JavaScript host has this much of `console`.
declare const console: { error(message: string): void };

const NO_HOST =
  "no Writ host is installed: in a component, build the policy with this SDK's build.mjs; " +
  "in a native test, evaluate through `toolCall(...).evaluate(...)` from @writ/policy/testing";

/** Outside both a component and a test harness: logs go to standard error, as the Rust SDK's do. */
const noHost: Host = {
  log(level, message) {
    console.error(`[${level}] ${message}`);
  },
  usage() {
    throw new Error(NO_HOST);
  },
  keyId() {
    throw new Error(NO_HOST);
  },
};

let installed: Host = noHost;

/** The host currently installed. */
export function host(): Host {
  return installed;
}

/** Installs `next` and returns the host it replaces. */
export function installHost(next: Host): Host {
  const previous = installed;
  installed = next;
  return previous;
}
