/**
 * `{{name}}`, a Writ policy: refunds up to 100 go ahead, larger ones wait for a human, and each
 * API key may issue at most five refunds a minute. Other actions are allowed.
 *
 * @module
 */

import { Decision, policy, type ToolCall, Window } from "@writ/policy";

/** The largest refund that needs no human. */
export const LIMIT = 100;

/** Refunds one key may issue in a minute. */
export const PER_MINUTE = 5;

export const evaluate = policy((call: ToolCall) => {
  if (call.action !== "refunds.issue") {
    return Decision.allow("not a refund");
  }
  let amount: number;
  try {
    amount = call.argNumber("amount");
  } catch {
    return Decision.block("a refund needs a numeric amount").code("invalid_arguments");
  }
  // Counted per key: an agent chooses its session and agent id, not its key.
  const counter = `refunds:${call.keyId}`;
  if (call.usage(counter, Window.Minute) >= PER_MINUTE) {
    return Decision.block("this key has issued its refunds for the minute").code("rate_limited");
  }
  if (amount > LIMIT) {
    return Decision.escalate(`a refund of ${amount} needs a human`)
      .code("refund_over_limit")
      .charge(counter, 1);
  }
  return Decision.allow("refund within limits").charge(counter, 1);
});
