import { host } from "./host.js";
import type { Window, WitToolCall } from "./wit.js";

/** The downstream HTTP request a tool call resolves to, from the tenant's tool catalog. */
export interface Target {
  /** The downstream service, e.g. `github`. */
  readonly service: string;
  /** HTTP method, upper case. */
  readonly method: string;
  /** The fully resolved URL, arguments substituted. */
  readonly url: string;
  /** Marked destructive in the tenant's tool catalog (e.g. a POST that moves money). */
  readonly destructive: boolean;
}

/**
 * Thrown when the arguments or context are not a JSON object, or an argument is missing or not of
 * the asked type. Catch it to answer malformed input with a decision; left uncaught, it traps the
 * component and the gateway blocks the call with code `policy_trap`.
 */
export class ArgumentError extends Error {
  override name = "ArgumentError";

  /**
   * @param message - What is wrong, e.g. "argument `amount` is missing".
   * @param argument - The argument's name, when the problem is one argument.
   */
  constructor(
    message: string,
    readonly argument?: string,
  ) {
    super(message);
  }
}

type JsonObject = Readonly<Record<string, unknown>>;

/** A tool call that an agent asks to perform. */
export class ToolCall {
  /** The logical action, e.g. `payments.initiate`. */
  readonly action: string;
  /** The arguments as JSON text (an object). */
  readonly argumentsJson: string;
  /** The caller-supplied context as JSON text (an object, `{}` when none). */
  readonly contextJson: string;
  /**
   * The agent making the call, as its request names it: checked by the gateway when the agent's
   * key is bound to an agent id, otherwise the caller's word. Key per-caller limits by
   * {@link ToolCall.keyId}.
   */
  readonly agentId: string;
  /** The session the call belongs to, as the agent names it: the agent can start a new one at will. */
  readonly sessionId: string;
  /** The tenant whose policy this is. */
  readonly tenantId: string;
  /** The downstream HTTP request, when the tenant's tool catalog knows the call. */
  readonly target: Target | undefined;
  /** Milliseconds since the Unix epoch, stamped by the gateway. */
  readonly timestampMs: number;

  #arguments: JsonObject | undefined;
  #context: JsonObject | undefined;

  /** Wraps the record the gateway passes; {@link policy} does this for you. */
  constructor(call: WitToolCall) {
    this.action = call.action;
    this.argumentsJson = call.arguments;
    this.contextJson = call.context;
    this.agentId = call.agentId;
    this.sessionId = call.sessionId;
    this.tenantId = call.tenantId;
    this.target = call.target && { ...call.target };
    // Exact for any date before the year 287396.
    this.timestampMs = Number(call.timestampMs);
  }

  /**
   * The arguments, parsed once.
   *
   * @throws {@link ArgumentError} if they are not a JSON object.
   */
  get arguments(): JsonObject {
    this.#arguments ??= parseObject(this.argumentsJson, "arguments are not a JSON object");
    return this.#arguments;
  }

  /**
   * The caller-supplied context, parsed once.
   *
   * @throws {@link ArgumentError} if it is not a JSON object.
   */
  get context(): JsonObject {
    this.#context ??= parseObject(this.contextJson, "context is not a JSON object");
    return this.#context;
  }

  /**
   * One argument by name, of any JSON type. A JSON `null` counts as present.
   *
   * @throws {@link ArgumentError} if it is missing, or the arguments are not a JSON object.
   */
  arg(name: string): unknown {
    const args = this.arguments;
    if (!Object.hasOwn(args, name)) {
      throw new ArgumentError(`argument \`${name}\` is missing`, name);
    }
    return args[name];
  }

  /**
   * One argument that must be a JSON number.
   *
   * @throws {@link ArgumentError} if it is missing or not a number (a numeric string is not).
   */
  argNumber(name: string): number {
    return this.#typed(name, "number") as number;
  }

  /**
   * One argument that must be a JSON string.
   *
   * @throws {@link ArgumentError} if it is missing or not a string.
   */
  argString(name: string): string {
    return this.#typed(name, "string") as string;
  }

  /**
   * One argument that must be `true` or `false`.
   *
   * @throws {@link ArgumentError} if it is missing or not a boolean.
   */
  argBoolean(name: string): boolean {
    return this.#typed(name, "boolean") as boolean;
  }

  /**
   * The id of the API key that made the call (`key_…`), as the gateway authenticated it. The
   * caller cannot choose it: count per-caller usage under a counter named after it.
   */
  get keyId(): string {
    return host().keyId();
  }

  /**
   * Sum of the charges recorded against `counter` in the current `window`, for this tenant (for
   * {@link Window.Session}, for this call's session). A counter never charged reads 0.
   */
  usage(counter: string, window: Window): number {
    return host().usage(counter, window);
  }

  #typed(name: string, type: "number" | "string" | "boolean"): unknown {
    const value = this.arg(name);
    if (typeof value !== type) {
      throw new ArgumentError(`argument \`${name}\` must be a ${type}, not ${describe(value)}`, name);
    }
    return value;
  }
}

function parseObject(json: string, notAnObject: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    throw new ArgumentError(notAnObject);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ArgumentError(notAnObject);
  }
  return value as JsonObject;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
