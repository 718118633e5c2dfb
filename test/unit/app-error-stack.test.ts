import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/core/errors.js';

describe('AppError stacks', () => {
  it('a refusal (4xx) captures no stack; a fault (5xx) keeps one; the process-wide limit is left as it was', () => {
    const before = Error.stackTraceLimit;
    const refusal = new AppError('INVALID_API_KEY');
    expect(refusal.status).toBe(401);
    expect(refusal.stack).toBe('AppError: Invalid API key');
    expect(Error.stackTraceLimit).toBe(before);

    const fault = new AppError('INTERNAL');
    expect(fault.status).toBe(500);
    expect(fault.stack!.split('\n').length).toBeGreaterThan(1);
    expect(fault.stack).toContain('app-error-stack.test.ts');
    expect(Error.stackTraceLimit).toBe(before);

    // Errors made after a refusal still get their stacks.
    expect(new Error('later').stack!.split('\n').length).toBeGreaterThan(1);
    expect(refusal).toBeInstanceOf(Error);
    expect(refusal.code).toBe('INVALID_API_KEY');
  });
});
