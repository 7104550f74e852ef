/**
 * A fake gateway for native tests under `node --test`.
 *
 * Build a call with {@link toolCall}, set what the host should answer, and evaluate the policy's
 * exported `evaluate` with it: the same function the component exports, so the test covers
 * the conversion to and from the WIT records too.
 *
 * ```ts
 * import { Window } from "@writ/policy";
 * import { toolCall } from "@writ/policy/testing";
 * import { evaluate } from "../src/policy.js";
 *
 * const result = toolCall("payments.initiate")
 *   .arguments({ amount: 30 })
 *   .usage("spend", Window.Session, 80)
 *   .evaluate(evaluate);
 * assert.equal(result.outcome, "escalate");
 * assert.deepEqual(result.codes, ["session_cap"]);
 * ```
 *
 * @module
 */

import type { Target } from "./call.js";
import { installHost } from "./host.js";
import type { Level, Window, WitDecision, WitToolCall } from "./wit.js";

/** A line the policy wrote with `log`. */
export interface LogLine {
  readonly level: Level;
  readonly message: string;
}

/** The decision a policy returned, with the lines it logged on the way. */
export interface Evaluation extends WitDecision {
  readonly logs: LogLine[];
}

/**
 * Thrown by {@link ToolCallBuilder.evaluate} when the policy returns a decision the gateway
 * would refuse, blocking the call with code `policy_invalid_result`.
 */
export class InvalidDecisionError extends Error {
  override name = "InvalidDecisionError";
}

/**
 * Starts building a call for `action`. Arguments and context default to `{}`, identities to
 * `test-…` (the key id to `key_test`), the timestamp to 0, and every usage counter to 0.
 */
export function toolCall(action: string): ToolCallBuilder {
  return new ToolCallBuilder(action);
}

/** Builds a call and the host's answers for a native test. Start with {@link toolCall}. */
export class ToolCallBuilder {
  readonly #call: WitToolCall;
  #keyId = "key_test";
  readonly #usage = new Map<string, number>();

  constructor(action: string) {
    this.#call = {
      action,
      arguments: "{}",
      context: "{}",
      agentId: "test-agent",
      sessionId: "test-session",
      tenantId: "test-tenant",
      target: undefined,
      timestampMs: 0n,
    };
  }

  /** Sets the arguments (normally an object), as JSON. */
  arguments(value: unknown): this {
    this.#call.arguments = JSON.stringify(value);
    return this;
  }

  /** Sets the arguments as raw JSON text, to test malformed input. */
  argumentsJson(json: string): this {
    this.#call.arguments = json;
    return this;
  }

  /** Sets the context (normally an object), as JSON. */
  context(value: unknown): this {
    this.#call.context = JSON.stringify(value);
    return this;
  }

  /** Sets the agent id. */
  agentId(agentId: string): this {
    this.#call.agentId = agentId;
    return this;
  }

  /** Sets the id of the key that makes the call. */
  keyId(keyId: string): this {
    this.#keyId = keyId;
    return this;
  }

  /** Sets the session id. */
  sessionId(sessionId: string): this {
    this.#call.sessionId = sessionId;
    return this;
  }

  /** Sets the tenant id. */
  tenantId(tenantId: string): this {
    this.#call.tenantId = tenantId;
    return this;
  }

  /** Sets the downstream target. */
  target(target: Target): this {
    this.#call.target = { ...target };
    return this;
  }

  /** Sets the timestamp, in milliseconds since the Unix epoch. */
  timestampMs(timestampMs: number | bigint): this {
    this.#call.timestampMs = BigInt(timestampMs);
    return this;
  }

  /** Sets what `usage(counter, window)` answers. */
  usage(counter: string, window: Window, value: number): this {
    this.#usage.set(usageKey(counter, window), value);
    return this;
  }

  /** The record the gateway would pass to the component's `evaluate`. */
  build(): WitToolCall {
    return { ...this.#call, target: this.#call.target && { ...this.#call.target } };
  }

  /**
   * Calls `evaluate` (the policy's export) on this call, with a fake host installed that answers
   * usage and key id as set here and captures log lines.
   *
   * Exceptions from the policy propagate (the gateway would block with `policy_trap`).
   *
   * @throws {@link InvalidDecisionError} if the decision breaks the gateway's limits.
   */
  evaluate(evaluate: (call: WitToolCall) => WitDecision): Evaluation {
    const logs: LogLine[] = [];
    const previous = installHost({
      log: (level, message) => void logs.push({ level, message }),
      usage: (counter, window) => this.#usage.get(usageKey(counter, window)) ?? 0,
      keyId: () => this.#keyId,
    });
    try {
      const decision = evaluate(this.build());
      const problem = invalidity(decision);
      if (problem !== undefined) {
        throw new InvalidDecisionError(`the gateway would refuse this decision: ${problem}`);
      }
      return { ...decision, logs };
    } finally {
      installHost(previous);
    }
  }
}

function usageKey(counter: string, window: Window): string {
  return `${window}\u0000${counter}`;
}

const CODE = /^[a-z0-9_.-]{1,64}$/;

// The gateway's checks, from the `decision` record's documentation in wit/policy.wit.
function invalidity(decision: WitDecision): string | undefined {
  if (!["allow", "block", "escalate"].includes(decision.outcome)) {
    return `outcome ${JSON.stringify(decision.outcome)} is not allow, block or escalate`;
  }
  const reasonBytes = utf8Length(decision.reason);
  if (reasonBytes > 4096) return `the reason is ${reasonBytes} bytes, over 4096`;
  if (decision.codes.length > 32) return `${decision.codes.length} codes, over 32`;
  const code = decision.codes.find((c) => !CODE.test(c));
  if (code !== undefined) {
    return `code ${JSON.stringify(code)} is not 1 to 64 bytes of a-z, 0-9, _, . or -`;
  }
  if (decision.charges.length > 32) return `${decision.charges.length} charges, over 32`;
  for (const { counter, amount } of decision.charges) {
    const counterBytes = utf8Length(counter);
    if (counterBytes < 1 || counterBytes > 128) {
      return `counter ${JSON.stringify(counter)} is ${counterBytes} bytes, not 1 to 128`;
    }
    if (!Number.isFinite(amount) || amount < 0) {
      return `the charge to ${JSON.stringify(counter)} is ${amount}, not finite and non-negative`;
    }
  }
  return undefined;
}

function utf8Length(text: string): number {
  let bytes = 0;
  for (const char of text) {
    const point = char.codePointAt(0)!;
    bytes += point < 0x80 ? 1 : point < 0x800 ? 2 : point < 0x10000 ? 3 : 4;
  }
  return bytes;
}
