import { describe, expect, it } from 'vitest';
import { routingOf } from '../../src/http/server.js';

/** What routing did before the plain-path shortcut: every target parsed as a URL. */
function byUrl(target: string): string | null {
  try {
    return new URL(target, 'http://localhost').pathname.replace(/\/+$/, '') || '/';
  } catch {
    return null;
  }
}

describe('routingOf: the plain-path shortcut routes every target as URL parsing does', () => {
  const targets = [
    '/',
    '/api/whoami',
    '/api/whoami/',
    '/api/whoami//',
    '/api/shell-auth/verify-key',
    '/api/./whoami',
    '/api/x/../whoami',
    '/api/%77hoami',
    '/api/whoami?x=1',
    '/shell-auth/verify?token=abc',
    '/api/whoami#frag',
    '//evil.example/api/whoami',
    '///api/whoami',
    '/api\\whoami',
    '/api/who ami',
    '/ĉu',
    'api/whoami',
    '*',
    '/..',
    '/.',
    '/a_b-c/D9',
    'http://other.example/api/whoami',
    'http://[::1',
  ];
  it.each(targets)('%s', (target) => {
    const routed = routingOf(target);
    expect(routed?.path ?? null).toBe(byUrl(target));
  });

  it('parses a URL only when the target is not a plain path', () => {
    expect(routingOf('/api/whoami')!.url).toBeUndefined();
    expect(routingOf('/shell-auth/verify?token=abc')!.url!.searchParams.get('token')).toBe('abc');
    expect(routingOf('/api/./whoami')!.url).toBeInstanceOf(URL);
  });

  it('refuses what no URL can be made of', () => {
    expect(routingOf('http://[::1')).toBeNull();
  });
});
