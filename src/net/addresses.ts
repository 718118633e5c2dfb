import net from 'node:net';

/**
 * IP addresses and ranges as text: parsed, normalised, matched. Used by the configuration
 * (SSH_PROXY_FROM) and the PROXY protocol reader.
 */

/** 16 bytes from a text address `net.isIPv6` accepted (a dotted IPv4 tail allowed). */
export function ipv6Bytes(text: string): Buffer {
  let hex = text;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const [a, b, c, d] = tail.split('.').map(Number) as [number, number, number, number];
    hex = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, rest] = hex.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const groups = rest === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), 2 * i));
  return bytes;
}

/** RFC 5952 text (lower case, longest zero run compressed); IPv4-mapped as `::ffff:a.b.c.d`, as Node shows peers. */
export function formatIPv6(bytes: Buffer): string {
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${Array.from(bytes.subarray(12)).join('.')}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(2 * i));
  let bestStart = -1;
  let bestLength = 1; // a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/** `10.0.0.0/8`, `::1`, `fd00::/8` → a normalised `address/prefix`, or null if it is neither an address nor a CIDR. */
export function parseAddressRange(text: string): string | null {
  const match = /^([^/]+)(?:\/(0|[1-9][0-9]{0,2}))?$/.exec(text.trim());
  if (!match) return null;
  const address = match[1]!;
  const family = net.isIPv4(address) ? 4 : net.isIPv6(address) && !address.includes('%') ? 6 : 0;
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  const prefix = match[2] === undefined ? max : Number(match[2]);
  if (prefix > max) return null;
  return `${family === 4 ? address : formatIPv6(ipv6Bytes(address))}/${prefix}`;
}

/** Whether an address (IPv4, IPv6 or IPv4-mapped IPv6) falls in one of the ranges from parseAddressRange. */
export function addressMatcher(ranges: readonly string[]): (address: string | undefined) => boolean {
  const list = new net.BlockList();
  for (const range of ranges) {
    const [address, prefix] = range.split('/') as [string, string];
    list.addSubnet(address, Number(prefix), net.isIPv4(address) ? 'ipv4' : 'ipv6');
  }
  return (address) => {
    if (address === undefined) return false;
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : null;
    return family !== null && list.check(address, family);
  };
}

/**
 * The key every per-address limit counts under: an IPv4 address as is (an IPv4-mapped IPv6 one
 * as its IPv4 form), an IPv6 address as its `/prefix` network. One host is routinely given a
 * whole /64, so counting single IPv6 addresses would give it unlimited budgets.
 */
export function addressGroupOf(address: string, ipv6Prefix: number): string {
  if (net.isIPv4(address)) return address;
  if (!net.isIPv6(address)) return address;
  const bytes = ipv6Bytes(address.split('%')[0]!);
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return Array.from(bytes.subarray(12)).join('.');
  }
  if (ipv6Prefix >= 128) return formatIPv6(bytes);
  const full = Math.floor(ipv6Prefix / 8);
  const rest = ipv6Prefix % 8;
  if (rest > 0) bytes[full] = bytes[full]! & (0xff << (8 - rest));
  bytes.fill(0, full + (rest > 0 ? 1 : 0));
  return `${formatIPv6(bytes)}/${ipv6Prefix}`;
}
