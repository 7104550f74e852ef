import assert from "node:assert/strict";
import { test } from "node:test";
import { Decision, log, policy, usage, Window, type ToolCall } from "@writ/policy";
import { InvalidDecisionError, toolCall } from "@writ/policy/testing";

// Charges per key; escalates past 100 in the session or the day.
const evaluate = policy((call: ToolCall) => {
  const amount = call.argNumber("amount");
  const counter = `spend:${call.keyId}`;
  log.info(`${counter} at ${call.timestampMs}`);
  if (call.usage(counter, Window.Session) + amount > 100 || usage(counter, Window.Day) + amount > 100) {
    log.warn("over the cap");
    return Decision.escalate("over 100").code("cap");
  }
  return Decision.allow("fine").charge(counter, amount);
});

test("evaluates the export with the fake host's answers", () => {
  const allowed = toolCall("pay").arguments({ amount: 30 }).keyId("key_a").timestampMs(7).evaluate(evaluate);
  assert.deepEqual(allowed, {
    outcome: "allow",
    reason: "fine",
    codes: [],
    charges: [{ counter: "spend:key_a", amount: 30 }],
    logs: [{ level: "info", message: "spend:key_a at 7" }],
  });

  const escalated = toolCall("pay")
    .arguments({ amount: 30 })
    .keyId("key_a")
    .usage("spend:key_a", Window.Day, 80)
    .usage("spend:key_b", Window.Session, 80)
    .evaluate(evaluate);
  assert.equal(escalated.outcome, "escalate");
  assert.deepEqual(escalated.codes, ["cap"]);
  assert.deepEqual(
    escalated.logs.map((l) => l.level),
    ["info", "warn"],
  );
});

test("exceptions propagate", () => {
  assert.throws(() => toolCall("pay").arguments({}).evaluate(evaluate), {
    name: "ArgumentError",
    message: "argument `amount` is missing",
  });
});

test("the host is only there during an evaluation", () => {
  toolCall("pay").arguments({ amount: 1 }).evaluate(evaluate);
  assert.throws(() => usage("spend", Window.AllTime), /no Writ host is installed/);
});

test("decisions the gateway would refuse throw InvalidDecisionError", () => {
  const bad = [
    Decision.allow("x".repeat(4097)),
    Decision.allow("é".repeat(2049)),
    Decision.allow("ok").code("Not_lower"),
    Decision.allow("ok").code(""),
    Decision.allow("ok").code("a".repeat(65)),
    Decision.allow("ok").charge("", 1),
    Decision.allow("ok").charge("c", -1),
    Decision.allow("ok").charge("c", Number.NaN),
    Decision.allow("ok").charge("c", Number.POSITIVE_INFINITY),
    Array.from({ length: 33 }).reduce((d: Decision, _, i) => d.code(`c${i}`), Decision.allow("ok")),
  ];
  for (const decision of bad) {
    assert.throws(() => toolCall("a").evaluate(policy(() => decision)), InvalidDecisionError);
  }
  const edge = Decision.allow("x".repeat(4096)).code("a".repeat(64)).charge("c".repeat(128), 0);
  assert.equal(toolCall("a").evaluate(policy(() => edge)).outcome, "allow");
});
