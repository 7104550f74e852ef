/**
 * `payments-limits`: the Provenance seed's payment scenario, as `example-policies/payments-limits`
 * has it in Rust.
 *
 * - `payments.initiate` in GBP, EUR or USD up to 500 is allowed;
 * - above 500 is escalated (`amount_over_limit`);
 * - any other currency is escalated for a human (`currency_not_preapproved`);
 * - a missing or non-numeric amount, or a missing currency, is blocked (`invalid_arguments`);
 * - `email.send` is allowed;
 * - any other action is blocked (`action_not_allowed`).
 *
 * @module
 */

import { ArgumentError, Decision, policy, type ToolCall } from "@writ/policy";

/** The largest payment allowed without a human. */
export const LIMIT = 500;

/** Currencies that need no human. */
export const PREAPPROVED: readonly string[] = ["GBP", "EUR", "USD"];

/** The seed's payment limits. */
export const evaluate = policy((call: ToolCall) => {
  switch (call.action) {
    case "payments.initiate":
      return payment(call);
    case "email.send":
      return Decision.allow("Email sending is allowed");
    default:
      return Decision.block(`Action \`${call.action}\` is not allowed by this policy`).code(
        "action_not_allowed",
      );
  }
});

function payment(call: ToolCall): Decision {
  let amount: number;
  let currency: string;
  try {
    amount = call.argNumber("amount");
    if (!(Number.isFinite(amount) && amount > 0)) {
      return Decision.block("Payment amount must be a positive number").code("invalid_arguments");
    }
    currency = call.argString("currency");
  } catch (e) {
    if (!(e instanceof ArgumentError)) throw e;
    return Decision.block(`Malformed payment arguments: ${e.message}`).code("invalid_arguments");
  }

  let decision: Decision | undefined;
  if (!PREAPPROVED.includes(currency)) {
    decision = Decision.escalate(
      `Currency ${currency} is not pre-approved: a human must review`,
    ).code("currency_not_preapproved");
  }
  if (amount > LIMIT) {
    decision = (
      decision ??
      Decision.escalate(
        `Payment of ${amount} ${currency} is over the ${LIMIT} limit: a human must review`,
      )
    ).code("amount_over_limit");
  }
  return decision ?? Decision.allow("Payment within approved parameters");
}
