import type { VerificationFacts } from '../core/index.js';

/** The facts about a verification request as label/value rows: the email and the confirm page show the same. */
export function factLines(facts: VerificationFacts): Array<[string, string]> {
  const lines: Array<[string, string]> = [
    ['Email', facts.email],
    ['Key type', facts.keyType],
    ['Fingerprint', facts.fingerprint],
    ['Requested from', `${facts.requestedIp ?? 'unknown address'} (${facts.channel === 'ssh' ? 'SSH' : 'HTTP'})`],
    // A date a person reads at a glance, in one unambiguous zone: "Fri, 27 Nov 2026 16:22:05 UTC".
    ['Requested at', facts.requestedAt.toUTCString().replace(/GMT$/, 'UTC')],
  ];
  if (facts.note) lines.push(['Note', facts.note]);
  return lines;
}
