/**
 * The values of the WIT world `writ:policy/policy` (`wit/policy.wit`), as a component built with
 * componentize-js receives and returns them. Policy authors rarely need these: {@link policy}
 * converts them to and from {@link ToolCall} and {@link Decision}.
 *
 * @module
 */

/**
 * A window over which {@link usage} sums a counter's charges. The minute, hour and day are fixed
 * UTC windows containing the call's timestamp.
 */
export const Window = {
  /** The call's session. */
  Session: "session",
  /** The current UTC minute. */
  Minute: "minute",
  /** The current UTC hour. */
  Hour: "hour",
  /** The current UTC day. */
  Day: "day",
  /** Everything ever charged to the counter by this tenant. */
  AllTime: "all-time",
} as const;

/** One of the {@link Window} constants. */
export type Window = (typeof Window)[keyof typeof Window];

/** Severity of a log line. */
export type Level = "debug" | "info" | "warn" | "error";

/** What the gateway should do with a call: let it go ahead, refuse it, or hold it for a human. */
export type Outcome = "allow" | "block" | "escalate";

/** The WIT `http-target` record. */
export interface WitHttpTarget {
  service: string;
  method: string;
  url: string;
  destructive: boolean;
}

/** The WIT `tool-call` record: what the component's `evaluate` receives. */
export interface WitToolCall {
  action: string;
  /** A JSON object, as text. */
  arguments: string;
  /** A JSON object, as text. */
  context: string;
  agentId: string;
  sessionId: string;
  tenantId: string;
  target?: WitHttpTarget | undefined;
  /** Milliseconds since the Unix epoch (a WIT `u64`). */
  timestampMs: bigint;
}

/** The WIT `charge` record. */
export interface WitCharge {
  counter: string;
  amount: number;
}

/** The WIT `decision` record: what the component's `evaluate` returns. */
export interface WitDecision {
  outcome: Outcome;
  reason: string;
  codes: string[];
  charges: WitCharge[];
}
