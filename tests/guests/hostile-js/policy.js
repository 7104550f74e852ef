// A hostile policy in plain JavaScript, for the gateway's sandbox tests: each action misbehaves
// in one way. Build it from a directory holding a copy of wit/ (componentize-js reads WIT only
// below its working directory):
//
//   componentize-js policy.js --wit wit --world-name policy --disable http fetch-event -o hostile_js.wasm

export function evaluate(call) {
  switch (call.action) {
    case "spin":
      for (;;) {}
    case "grow": {
      // Ever larger buffers, so that the memory cap is reached before the fuel runs out.
      const hoard = [];
      for (let size = 4 << 20; ; size *= 2) hoard.push(new ArrayBuffer(size));
    }
    case "raise":
      throw new Error("raised on purpose");
    case "huge-reason":
      // Twice the contract's bound: handing a string over costs componentize-js's glue about
      // 2,600 fuel a byte, so a larger one would run out of fuel first.
      return allow("x".repeat(8 << 10));
    case "print":
      console.log("hello from a policy");
      console.error("and from its stderr");
      return allow("printed");
    case "clock":
      return allow(String(Date.now()));
    case "random":
      return allow(String(Math.random()));
    default:
      return allow("ok");
  }
}

function allow(reason) {
  return { outcome: "allow", reason, codes: [], charges: [] };
}
