import type { Outcome } from "./wit.js";

/** An amount added to a named usage counter if, and only if, the call goes ahead. */
export interface Charge {
  /** The counter's name, e.g. `spend:GBP` (1 to 128 bytes). */
  readonly counter: string;
  /** Finite and not negative, or the gateway blocks the call as invalid. */
  readonly amount: number;
}

/**
 * A policy's answer for one call.
 *
 * Start one with {@link Decision.allow}, {@link Decision.block} or {@link Decision.escalate}, then
 * chain codes and charges:
 *
 * ```ts
 * Decision.escalate("amount over 500").code("amount_over_limit").charge("spend:GBP", 800);
 * ```
 *
 * The gateway blocks the call with code `policy_invalid_result` if the reason is over 4096
 * bytes, or there are more than 32 codes or charges, or a code is not 1 to 64 bytes of `a-z`,
 * `0-9`, `_`, `.` or `-`, or a charge's counter is not 1 to 128 bytes or its amount is not
 * finite and non-negative. Native tests through `@writ/policy/testing` check the same rules.
 */
export class Decision {
  /** Machine-readable codes, e.g. `amount_over_limit`, in the order added. */
  readonly codes: string[] = [];
  /** Charges recorded when the call is allowed, or when a human later approves it. */
  readonly charges: Charge[] = [];

  private constructor(
    /** Allow, block or escalate. */
    readonly outcome: Outcome,
    /** Human-readable explanation, shown to agents and reviewers. */
    readonly reason: string,
  ) {}

  /** Lets the call go ahead. */
  static allow(reason: string): Decision {
    return new Decision("allow", reason);
  }

  /** Refuses the call. */
  static block(reason: string): Decision {
    return new Decision("block", reason);
  }

  /** Holds the call for a human reviewer. */
  static escalate(reason: string): Decision {
    return new Decision("escalate", reason);
  }

  /** Adds a machine-readable code; returns this decision. */
  code(code: string): this {
    this.codes.push(code);
    return this;
  }

  /** Adds a charge to `counter`, recorded only if the call goes ahead; returns this decision. */
  charge(counter: string, amount: number): this {
    this.charges.push({ counter, amount });
    return this;
  }

  /** Whether the decision carries `code`. */
  hasCode(code: string): boolean {
    return this.codes.includes(code);
  }
}
