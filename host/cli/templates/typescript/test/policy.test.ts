import assert from "node:assert/strict";
import { test } from "node:test";
import { Window } from "@writ/policy";
import { toolCall } from "@writ/policy/testing";
import { evaluate } from "../src/policy.js";

function refund(amount: number, issuedThisMinute = 0) {
  return toolCall("refunds.issue")
    .arguments({ amount })
    .keyId("key_a")
    .usage("refunds:key_a", Window.Minute, issuedThisMinute)
    .evaluate(evaluate);
}

test("a small refund is allowed and counted", () => {
  const d = refund(20);
  assert.equal(d.outcome, "allow");
  assert.equal(d.charges.length, 1);
});

test("a large refund is escalated", () => {
  assert.deepEqual(refund(250).codes, ["refund_over_limit"]);
});

test("the sixth refund of a minute is blocked", () => {
  assert.deepEqual(refund(20, 5).codes, ["rate_limited"]);
});
