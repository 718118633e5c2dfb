import net from 'node:net';
import { formatIPv6, ipv6Bytes } from '../net/addresses.js';

// Re-exported for the SSH door's callers; the parsing lives with the other address helpers.
export { addressMatcher, parseAddressRange } from '../net/addresses.js';

/**
 * The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2) on the SSH port: a load
 * balancer opens each connection with one header naming the client it relays. Parsed strictly:
 * anything that does not match the spec exactly is refused, and the caller closes the connection.
 */

/** The client a header names; `family` as Node spells `socket.remoteFamily`. */
export type ProxySource = { address: string; port: number; family: 'IPv4' | 'IPv6' };

export type ProxyHeader = {
  version: 1 | 2;
  /** The relayed client; null for LOCAL, UNKNOWN and unsupported families: use the socket's own peer. */
  source: ProxySource | null;
  /** Bytes the header takes at the start of the stream. */
  length: number;
};

export type ProxyParse = { kind: 'incomplete' } | { kind: 'invalid'; reason: string } | { kind: 'header'; header: ProxyHeader };

/** v1: the longest line the spec allows, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses). */
export const MAX_V1_BYTES = 107;
/** v2: our bound on the bytes after the 16-byte fixed part (addresses + TLVs); the spec allows 65535. */
export const MAX_V2_BLOCK_BYTES = 4096;

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const CR = 0x0d;
const LF = 0x0a;

/** Reads a header from the start of `data`: complete, not yet complete, or invalid (close the connection). */
export function parseProxyHeader(data: Buffer): ProxyParse {
  if (data.length === 0) return { kind: 'incomplete' };
  if (data[0] === V2_SIGNATURE[0]) return parseV2(data);
  if (data[0] === V1_PREFIX[0]) return parseV1(data);
  return invalid('not a PROXY protocol header');
}

const invalid = (reason: string): ProxyParse => ({ kind: 'invalid', reason });

/** Whether `data` agrees with `expected` as far as either goes. */
const startsLike = (data: Buffer, expected: Buffer) => data.subarray(0, expected.length).equals(expected.subarray(0, Math.min(data.length, expected.length)));

function parseV1(data: Buffer): ProxyParse {
  if (!startsLike(data, V1_PREFIX)) return invalid('not a PROXY protocol header');
  const window = data.subarray(0, MAX_V1_BYTES);
  const lf = window.indexOf(LF);
  const lineEnd = lf === -1 ? window.length : lf;
  // Only printable US-ASCII before the CRLF; a CR anywhere but right before the LF is malformed.
  for (let i = 0; i < lineEnd; i++) {
    const byte = window[i]!;
    if (byte === CR && i === lineEnd - 1) continue;
    if (byte < 0x20 || byte > 0x7e) return invalid('v1: control character in the header line');
  }
  if (lf === -1) return window.length >= MAX_V1_BYTES ? invalid(`v1: no CRLF within ${MAX_V1_BYTES} bytes`) : { kind: 'incomplete' };
  if (lf === 0 || window[lf - 1] !== CR) return invalid('v1: line ends with a bare LF');
  const line = window.toString('latin1', 0, lf - 1);
  const parts = line.split(' ');
  const length = lf + 1;
  if (parts[1] === 'UNKNOWN') return { kind: 'header', header: { version: 1, source: null, length } };
  if (parts[1] !== 'TCP4' && parts[1] !== 'TCP6') return invalid('v1: protocol must be TCP4, TCP6 or UNKNOWN');
  if (parts.length !== 6) return invalid('v1: expected "PROXY TCP4|TCP6 SRC DST SPORT DPORT"');
  const [, protocol, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const family = protocol === 'TCP4' ? 'IPv4' : 'IPv6';
  const source = textAddress(src, family);
  if (source === null || textAddress(dst, family) === null) return invalid(`v1: malformed ${family} address`);
  const sourcePort = textPort(sport);
  if (sourcePort === null || textPort(dport) === null) return invalid('v1: malformed port');
  return { kind: 'header', header: { version: 1, source: { address: source, port: sourcePort, family }, length } };
}

/** An address as the spec writes it (no leading zeros, no zone), in its canonical form; or null. */
function textAddress(text: string, family: 'IPv4' | 'IPv6'): string | null {
  if (family === 'IPv4') return net.isIPv4(text) ? text : null;
  if (!net.isIPv6(text) || text.includes('%')) return null;
  return formatIPv6(ipv6Bytes(text));
}

function textPort(text: string): number | null {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return null;
  const port = Number(text);
  return port <= 65535 ? port : null;
}

function parseV2(data: Buffer): ProxyParse {
  if (!startsLike(data, V2_SIGNATURE)) return invalid('v2: bad signature');
  if (data.length < 16) return { kind: 'incomplete' };
  const versionCommand = data[12]!;
  if (versionCommand >> 4 !== 2) return invalid('v2: version must be 2');
  const command = versionCommand & 0x0f;
  if (command !== 0 && command !== 1) return invalid('v2: command must be LOCAL or PROXY');
  const familyProtocol = data[13]!;
  // The seven combinations the spec lists; anything else must be refused.
  if (![0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32].includes(familyProtocol)) return invalid('v2: unknown address family or protocol');
  const blockLength = data.readUInt16BE(14);
  if (blockLength > MAX_V2_BLOCK_BYTES) return invalid(`v2: header longer than ${16 + MAX_V2_BLOCK_BYTES} bytes`);
  const length = 16 + blockLength;
  if (data.length < length) return { kind: 'incomplete' };
  const block = data.subarray(16, length);
  // LOCAL (the balancer's own health check) and AF_UNSPEC / AF_UNIX: the socket's peer is the client.
  if (command === 0 || familyProtocol === 0x00 || familyProtocol === 0x31) return { kind: 'header', header: { version: 2, source: null, length } };
  if ((familyProtocol & 0x0f) === 0x2) return invalid('v2: a datagram (UDP) connection cannot carry SSH');
  const ipv4 = familyProtocol === 0x11;
  const addressBytes = ipv4 ? 4 : 16;
  const addressesEnd = 2 * addressBytes + 4;
  if (block.length < addressesEnd) return invalid('v2: address block too short for its family');
  const tlvs = checkTlvs(block.subarray(addressesEnd));
  if (tlvs !== null) return invalid(`v2: ${tlvs}`);
  const src = block.subarray(0, addressBytes);
  const address = ipv4 ? Array.from(src).join('.') : formatIPv6(src);
  const port = block.readUInt16BE(2 * addressBytes);
  return { kind: 'header', header: { version: 2, source: { address, port, family: ipv4 ? 'IPv4' : 'IPv6' }, length } };
}

/** TLVs are skipped, but they must tile the rest of the block exactly. Returns what is wrong, or null. */
function checkTlvs(tlvs: Buffer): string | null {
  let offset = 0;
  while (offset < tlvs.length) {
    if (offset + 3 > tlvs.length) return 'truncated TLV';
    offset += 3 + tlvs.readUInt16BE(offset + 1);
    if (offset > tlvs.length) return 'TLV longer than the header';
  }
  return null;
}

/**
 * Reads the header off a fresh socket, before anything else touches it. Resolves once: with the
 * header (the socket paused, any bytes past the header put back for the next reader), or with
 * why not (invalid, closed, or no complete header within `timeoutMs`); the caller closes it then.
 */
export function readProxyHeader(
  socket: net.Socket,
  timeoutMs: number,
): Promise<{ ok: true; header: ProxyHeader } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    let received: Buffer = Buffer.alloc(0);
    const finish = (outcome: { ok: true; header: ProxyHeader } | { ok: false; reason: string }) => {
      clearTimeout(timer);
      socket.pause();
      socket.off('data', onData);
      socket.off('end', onGone);
      socket.off('close', onGone);
      resolve(outcome);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: `no complete PROXY protocol header within ${timeoutMs} ms` }), timeoutMs);
    const onGone = () => finish({ ok: false, reason: 'connection closed before a complete PROXY protocol header' });
    // `received` stays bounded: the parser refuses once past MAX_V1_BYTES or the v2 block bound.
    const onData = (chunk: Buffer) => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const parsed = parseProxyHeader(received);
      if (parsed.kind === 'incomplete') return;
      if (parsed.kind === 'invalid') return finish({ ok: false, reason: parsed.reason });
      finish({ ok: true, header: parsed.header });
      const rest = received.subarray(parsed.header.length);
      if (rest.length > 0) socket.unshift(rest);
    };
    socket.on('data', onData);
    socket.once('end', onGone);
    socket.once('close', onGone);
  });
}

/**
 * Makes the header's client the socket's peer for everything after: our admission reads
 * `socket.remoteAddress`, and ssh2 builds its `info.ip`/`port`/`family` from the same three
 * properties (lib/server.js, when the client's ident line arrives). Own properties shadow the
 * prototype's getters on this one socket object only.
 */
export function adoptProxySource(socket: net.Socket, source: ProxySource): void {
  const values: Record<'remoteAddress' | 'remotePort' | 'remoteFamily', string | number> = {
    remoteAddress: source.address,
    remotePort: source.port,
    remoteFamily: source.family,
  };
  for (const [name, value] of Object.entries(values)) {
    Object.defineProperty(socket, name, { value, configurable: true, enumerable: true, writable: false });
  }
}
