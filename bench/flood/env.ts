/** Settings from the environment; a value that makes no sense stops the bench before it starts. */

/** A positive number, `fallback` when unset. */
export const positiveEnv = (name: string, fallback: number) => {
  const value = Number(process.env[name] || fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
};

/** A whole number (0 allowed), `fallback` when unset. */
export const wholeEnv = (name: string, fallback: number) => {
  const value = Number(process.env[name] || fallback);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a whole number`);
  return value;
};
