/**
 * Writ policies in TypeScript.
 *
 * A policy is a pure function from a {@link ToolCall} to a {@link Decision}, exported as the
 * component's `evaluate` with {@link policy}:
 *
 * ```ts
 * import { Decision, policy, ToolCall, Window } from "@writ/policy";
 *
 * export const evaluate = policy((call: ToolCall) => {
 *   if (call.action !== "payments.initiate") {
 *     return Decision.block("only payments are allowed").code("action_not_allowed");
 *   }
 *   const amount = call.argNumber("amount");
 *   if (call.usage("spend", Window.Session) + amount > 100) {
 *     return Decision.escalate("session spend over 100").code("session_cap");
 *   }
 *   return Decision.allow("small payment").charge("spend", amount);
 * });
 * ```
 *
 * The same compiled module runs natively under `node --test`, through the fake host of
 * `@writ/policy/testing`, and in the component that this package's `build.mjs` makes.
 *
 * @module
 */

import { ToolCall } from "./call.js";
import type { Decision } from "./decision.js";
import { host } from "./host.js";
import type { Level, Window, WitDecision, WitToolCall } from "./wit.js";

export { ArgumentError, ToolCall, type Target } from "./call.js";
export { Decision, type Charge } from "./decision.js";
export {
  Window,
  type Level,
  type Outcome,
  type WitCharge,
  type WitDecision,
  type WitHttpTarget,
  type WitToolCall,
} from "./wit.js";

/**
 * Turns a policy function into the component's `evaluate` export, which takes and returns the
 * WIT records. Export the result as `evaluate`, once per policy:
 *
 * ```ts
 * export const evaluate = policy((call) => Decision.allow("ok"));
 * ```
 *
 * Exceptions are not caught: an uncaught one traps the component, and the gateway blocks the
 * call with code `policy_trap`.
 */
export function policy(decide: (call: ToolCall) => Decision): (call: WitToolCall) => WitDecision {
  return (call) => {
    const decision = decide(new ToolCall(call));
    return {
      outcome: decision.outcome,
      reason: decision.reason,
      codes: [...decision.codes],
      charges: decision.charges.map(({ counter, amount }) => ({ counter, amount })),
    };
  };
}

/**
 * Sum of the charges recorded against `counter` in the current `window`, for this tenant (for
 * {@link Window.Session}, for this call's session). A counter never charged reads 0. The same as
 * {@link ToolCall.usage}.
 *
 * The gateway remembers what a policy read: if a concurrent call changes a counter this
 * evaluation read before this call's charges are committed, the call is evaluated again.
 */
export function usage(counter: string, window: Window): number {
  return host().usage(counter, window);
}

function logAt(level: Level): (message: string) => void {
  return (message) => host().log(level, message);
}

/**
 * Writes a line to the gateway's log, tagged with the tenant and policy. The gateway keeps at
 * most 64 lines per evaluation, each cut to 2048 bytes. In native tests the lines are captured
 * in the evaluation's `logs`.
 */
export const log = {
  /** Detail for policy authors. */
  debug: logAt("debug"),
  /** Normal operation. */
  info: logAt("info"),
  /** Something unexpected that the policy handled. */
  warn: logAt("warn"),
  /** Something the policy could not handle. */
  error: logAt("error"),
} as const;
