import assert from "node:assert/strict";
import { test } from "node:test";
import { ArgumentError, ToolCall, type WitToolCall } from "@writ/policy";
import { toolCall } from "@writ/policy/testing";

function call(args: string, context = "{}"): ToolCall {
  return new ToolCall({ ...toolCall("a").build(), arguments: args, context });
}

test("reads the call's fields", () => {
  const raw: WitToolCall = toolCall("github.repos.delete")
    .agentId("agent-7")
    .sessionId("s-1")
    .tenantId("acme")
    .timestampMs(1_700_000_000_123n)
    .target({ service: "github", method: "DELETE", url: "https://api.github.com/x", destructive: true })
    .build();
  const c = new ToolCall(raw);
  assert.equal(c.action, "github.repos.delete");
  assert.equal(c.agentId, "agent-7");
  assert.equal(c.sessionId, "s-1");
  assert.equal(c.tenantId, "acme");
  assert.equal(c.timestampMs, 1_700_000_000_123);
  assert.deepEqual(c.target, {
    service: "github",
    method: "DELETE",
    url: "https://api.github.com/x",
    destructive: true,
  });
  assert.equal(new ToolCall(toolCall("a").build()).target, undefined);
});

test("parses arguments and context once", () => {
  const c = call('{"amount": 5, "note": "hi", "urgent": false, "to": null}', '{"ticket": 42}');
  assert.equal(c.arguments, c.arguments);
  assert.deepEqual(c.arguments, { amount: 5, note: "hi", urgent: false, to: null });
  assert.deepEqual(c.context, { ticket: 42 });
  assert.equal(c.argNumber("amount"), 5);
  assert.equal(c.argString("note"), "hi");
  assert.equal(c.argBoolean("urgent"), false);
  assert.equal(c.arg("to"), null);
});

test("typed getters throw ArgumentError naming the argument", () => {
  const c = call('{"amount": "fifty", "list": [1], "none": null}');
  assert.throws(() => c.argNumber("amount"), {
    name: "ArgumentError",
    message: "argument `amount` must be a number, not a string",
    argument: "amount",
  });
  assert.throws(() => c.argString("list"), { message: "argument `list` must be a string, not an array" });
  assert.throws(() => c.argNumber("none"), { message: "argument `none` must be a number, not null" });
  assert.throws(() => c.argString("missing"), { message: "argument `missing` is missing" });
  // Inherited properties are not arguments.
  assert.throws(() => c.arg("toString"), ArgumentError);
});

test("arguments that are not an object throw ArgumentError", () => {
  for (const json of ["[1, 2]", "null", "3", "{", ""]) {
    assert.throws(() => call(json).argNumber("amount"), {
      name: "ArgumentError",
      message: "arguments are not a JSON object",
    });
  }
  assert.throws(() => call("{}", "[]").context, { message: "context is not a JSON object" });
});
