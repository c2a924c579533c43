// No clock, and randomness that is a function of the change: while a rule runs, `Date.now()`,
// `new Date()` without arguments and `performance.now()` throw ClockUnavailable (in Wasm they
// would return the moment the component was built), and `Math.random` is a generator seeded
// from the change's LSN before each change. Everything is put back afterwards.

/** Thrown by the clock readers while a rule runs: a rule must be a function of the change. */
export class ClockUnavailable extends Error {
  constructor(what) {
    super(`${what}: sluice rules have no clock (a rule must be a function of the change alone); use the row's own timestamp columns`);
    this.name = 'ClockUnavailable';
  }
}

// splitmix64: small, well distributed, and the same in every engine.
function splitmix64(seed) {
  let state = BigInt.asUintN(64, BigInt(seed));
  return () => {
    state = BigInt.asUintN(64, state + 0x9e3779b97f4a7c15n);
    let z = state;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    z ^= z >> 31n;
    return Number(z >> 11n) / 2 ** 53;
  };
}

/** The first numbers `Math.random` gives during a change with this LSN. */
export function randomFor(lsn, count) {
  const next = splitmix64(lsn);
  return Array.from({ length: count }, next);
}

/**
 * Runs `body(reseed)` with no clock; `reseed(lsn)` restarts Math.random for a change.
 */
export function deterministic(body) {
  const RealDate = globalThis.Date;
  const realRandom = Math.random;
  const perf = globalThis.performance;
  const realPerfNow = perf?.now;
  class NoClockDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) throw new ClockUnavailable('new Date()');
      super(...args);
    }
    static now() {
      throw new ClockUnavailable('Date.now');
    }
  }
  let next = splitmix64(0);
  try {
    globalThis.Date = NoClockDate;
    Math.random = () => next();
    if (perf && realPerfNow) {
      try {
        perf.now = () => { throw new ClockUnavailable('performance.now'); };
      } catch {
        // A frozen `performance` keeps its clock; it is the build time in Wasm anyway.
      }
    }
    return body((lsn) => { next = splitmix64(lsn); });
  } finally {
    globalThis.Date = RealDate;
    Math.random = realRandom;
    if (perf && realPerfNow) {
      try { perf.now = realPerfNow; } catch { /* as above */ }
    }
  }
}
