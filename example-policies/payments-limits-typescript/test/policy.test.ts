import assert from "node:assert/strict";
import { test } from "node:test";
import { toolCall } from "@writ/policy/testing";
import { evaluate, PREAPPROVED } from "../src/policy.js";

function pay(args: unknown) {
  return toolCall("payments.initiate").arguments(args).evaluate(evaluate);
}

test("allows small payments in pre-approved currencies", () => {
  for (const currency of PREAPPROVED) {
    const d = pay({ amount: 500, currency, recipient_id: "rec_abc123" });
    assert.equal(d.outcome, "allow", currency);
    assert.equal(d.reason, "Payment within approved parameters");
    assert.deepEqual(d.codes, []);
  }
});

test("escalates payments over the limit", () => {
  const d = pay({ amount: 800, currency: "GBP", recipient_id: "rec_xyz789" });
  assert.equal(d.outcome, "escalate");
  assert.deepEqual(d.codes, ["amount_over_limit"]);
  assert.equal(d.reason, "Payment of 800 GBP is over the 500 limit: a human must review");
});

test("escalates other currencies", () => {
  const d = pay({ amount: 100, currency: "JPY", recipient_id: "rec_jpy001" });
  assert.equal(d.outcome, "escalate");
  assert.deepEqual(d.codes, ["currency_not_preapproved"]);
  assert.equal(d.reason, "Currency JPY is not pre-approved: a human must review");
});

test("a large payment in another currency carries both codes", () => {
  const d = pay({ amount: 9000, currency: "JPY" });
  assert.equal(d.outcome, "escalate");
  assert.deepEqual(d.codes, ["currency_not_preapproved", "amount_over_limit"]);
});

test("blocks malformed amounts", () => {
  for (const args of [
    { currency: "GBP" },
    { amount: "fifty", currency: "GBP" },
    { amount: null, currency: "GBP" },
    { amount: -5, currency: "GBP" },
    { amount: 0, currency: "GBP" },
    { amount: 10 },
    [1, 2],
  ]) {
    const d = pay(args);
    assert.equal(d.outcome, "block", JSON.stringify(args));
    assert.deepEqual(d.codes, ["invalid_arguments"], JSON.stringify(args));
  }
  assert.equal(
    pay({ amount: "fifty", currency: "GBP" }).reason,
    "Malformed payment arguments: argument `amount` must be a number, not a string",
  );
});

test("allows email", () => {
  assert.equal(toolCall("email.send").evaluate(evaluate).outcome, "allow");
});

test("blocks unknown actions", () => {
  const d = toolCall("github.repos.delete").evaluate(evaluate);
  assert.equal(d.outcome, "block");
  assert.deepEqual(d.codes, ["action_not_allowed"]);
  assert.equal(d.reason, "Action `github.repos.delete` is not allowed by this policy");
});
