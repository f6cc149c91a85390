// Exact decimals for the order ticket: prices, sizes and their products as scaled BigInts,
// never floats (a float says 0.1 + 0.2 is not 0.3; a tick check must never be wrong).

const DECIMAL = /^\d+(\.\d+)?$/;

// "12.50" -> { units: 1250n, scale: 2 }; null when it is not a plain non-negative decimal.
export function parse(text) {
  const value = String(text ?? "").trim();
  if (!DECIMAL.test(value)) return null;
  const [whole, fraction = ""] = value.split(".");
  return { units: BigInt(whole + fraction), scale: fraction.length };
}

function rescale(a, scale) {
  return a.units * 10n ** BigInt(scale - a.scale);
}

// Whether `a` is a whole multiple of `step` (both parsed).
export function isMultiple(a, step) {
  const scale = Math.max(a.scale, step.scale);
  const s = rescale(step, scale);
  return s !== 0n && rescale(a, scale) % s === 0n;
}

export function compare(a, b) {
  const scale = Math.max(a.scale, b.scale);
  const x = rescale(a, scale);
  const y = rescale(b, scale);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function multiply(a, b) {
  return { units: a.units * b.units, scale: a.scale + b.scale };
}

export function add(a, b) {
  const scale = Math.max(a.scale, b.scale);
  return { units: rescale(a, scale) + rescale(b, scale), scale };
}

export function isZero(a) {
  return a.units === 0n;
}

// `a` as text with `places` decimals, rounded half up (display only).
export function format(a, places) {
  let units = a.units;
  if (a.scale > places) {
    const divisor = 10n ** BigInt(a.scale - places);
    units = (units + divisor / 2n) / divisor;
  } else {
    units *= 10n ** BigInt(places - a.scale);
  }
  const digits = units.toString().padStart(places + 1, "0");
  return places ? `${digits.slice(0, -places)}.${digits.slice(-places)}` : digits;
}
