// The gateway's import, as componentize-js names it (checked with `jco guest-types`). Only
// `component.ts` imports it; the build leaves the specifier for componentize-js to bind.
declare module "writ:policy/host@0.1.0" {
  export function log(level: "debug" | "info" | "warn" | "error", message: string): void;
  export function usage(
    counter: string,
    window: "session" | "minute" | "hour" | "day" | "all-time",
  ): number;
  export function keyId(): string;
}
