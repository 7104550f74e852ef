import assert from "node:assert/strict";
import { test } from "node:test";
import { Decision } from "@writ/policy";

test("builders set the outcome and chain codes and charges", () => {
  const d = Decision.escalate("amount over 500").code("amount_over_limit").charge("spend:GBP", 800);
  assert.equal(d.outcome, "escalate");
  assert.equal(d.reason, "amount over 500");
  assert.deepEqual(d.codes, ["amount_over_limit"]);
  assert.deepEqual(d.charges, [{ counter: "spend:GBP", amount: 800 }]);
  assert.ok(d.hasCode("amount_over_limit"));
  assert.ok(!d.hasCode("other"));
  assert.equal(Decision.allow("ok").outcome, "allow");
  assert.equal(Decision.block("no").outcome, "block");
});
