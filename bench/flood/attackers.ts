/**
 * C and D: raw TCP attackers in child processes.
 *
 * Each child holds at most ATTACK_SOCKETS_PER_PROCESS sockets, so no attacker process comes near
 * its own file limit (the same as the service's here: whoever runs out must be the service). A
 * child opens its slots (address, count) round-robin over the addresses, `roundsPerSecond` rounds
 * of one connection per address a second (0: as fast as `inFlight` pending connects allow),
 * optionally writes `payload` once connected, reads and discards whatever comes back, and exits
 * when told to stop or when this process goes away (its IPC channel closes). Each slot binds its
 * own window of local ports (bind(address, 0) would make the kernel search the port range on
 * every connect, which costs the attacker more than the service once thousands are taken);
 * a port its server closed is reused last. On stop, connections end with a reset, so no port
 * is left in TIME_WAIT for the next run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { positiveEnv } from './env.js';
import { attackerPids } from './service.js';

export const SOCKETS_PER_PROCESS = positiveEnv('ATTACK_SOCKETS_PER_PROCESS', 8000);
/** A bound on what the attackers may open: the machine's, not the service's. */
const MAX_ATTACK_SOCKETS = 60_000;

export type AttackSlot = { address: string; count: number; portLow: number; portHigh: number };
export type AttackJob = { port: number; slots: AttackSlot[]; payload: string | null; roundsPerSecond: number; inFlight: number; reconnectMs: number };
export type AttackStats = {
  attempted: number;
  accepted: number;
  refused: number;
  closedAtOnce: number;
  closedLater: number;
  open: number;
  greeted: number;
  errors: Record<string, number>;
};

/** Local ports the attackers bind, per address (explicitly: any port, not just the ephemeral range). */
const LOCAL_PORTS = { low: 10_000, high: 65_535 };

const ATTACKER_SOURCE = String.raw`
const net = require('node:net');
const stats = { attempted: 0, accepted: 0, refused: 0, closedAtOnce: 0, closedLater: 0, open: 0, greeted: 0, errors: {} };
const sockets = new Set();
const queue = [];
let head = 0, pending = 0, stopping = false, job = null;
const note = (key) => (stats.errors[key] = (stats.errors[key] || 0) + 1);
function takePort(slot) {
  if (slot.cursor <= slot.portHigh) return slot.cursor++;
  if (slot.freeHead < slot.free.length) return slot.free[slot.freeHead++];
  return 0;
}
function releasePort(slot, port) {
  slot.free.push(port);
  if (slot.freeHead > 4096 && slot.freeHead * 2 > slot.free.length) { slot.free = slot.free.slice(slot.freeHead); slot.freeHead = 0; }
}
function pump() {
  while (!stopping && pending < job.inFlight && head < queue.length) open(queue[head++]);
  if (head > 4096 && head === queue.length) { queue.length = 0; head = 0; }
}
function open(slot) {
  const localPort = takePort(slot);
  if (!localPort) { stats.attempted++; stats.refused++; note('no free local port'); return; }
  pending++;
  let connectedAt = 0, greeted = false, settled = false, portTaken = false;
  const socket = net.connect({ host: '127.0.0.1', port: job.port, localAddress: slot.address, localPort });
  sockets.add(socket);
  const settle = () => { if (!settled) { settled = true; pending--; pump(); } };
  const timer = setTimeout(() => { if (!connectedAt) { note('no handshake within 10 s'); socket.destroy(); } }, 10000);
  socket.on('connect', () => {
    clearTimeout(timer);
    connectedAt = Date.now();
    stats.attempted++;
    stats.accepted++;
    stats.open++;
    slot.inUseRetries = 0;
    settle();
    if (job.payload) socket.write(job.payload);
  });
  socket.on('data', () => { if (!greeted) { greeted = true; stats.greeted++; } });
  socket.on('error', (err) => {
    if (stopping) return;
    // A local port someone else holds: not the service's doing; take another one.
    if (!connectedAt && err.code === 'EADDRINUSE' && ++slot.inUseRetries < 1000) portTaken = true;
    else note((connectedAt ? 'after connect: ' : '') + (err.code || err.message));
  });
  socket.on('close', () => {
    clearTimeout(timer);
    sockets.delete(socket);
    if (portTaken) { settle(); queue.push(slot); pump(); return; }
    releasePort(slot, localPort);
    if (connectedAt) {
      stats.open--;
      if (!stopping) Date.now() - connectedAt <= 1000 ? stats.closedAtOnce++ : stats.closedLater++;
    } else if (!stopping) { stats.attempted++; stats.refused++; }
    settle();
    if (!stopping && job.reconnectMs > 0) setTimeout(() => { queue.push(slot); pump(); }, job.reconnectMs);
  });
}
process.on('disconnect', () => process.exit(0));
process.on('message', (m) => {
  if (m.type === 'start') {
    job = m.job;
    for (const slot of job.slots) Object.assign(slot, { cursor: slot.portLow, free: [], freeHead: 0, inUseRetries: 0 });
    const rounds = Math.max(...job.slots.map((s) => s.count));
    const round = (r) => { for (const s of job.slots) if (s.count > r) queue.push(s); pump(); };
    if (!job.roundsPerSecond) for (let r = 0; r < rounds; r++) round(r);
    else for (let r = 0; r < rounds; r++) setTimeout(() => { if (!stopping) round(r); }, (r * 1000) / job.roundsPerSecond);
  } else if (m.type === 'stats') {
    process.send({ type: 'stats', stats });
  } else if (m.type === 'stop') {
    stopping = true;
    for (const socket of sockets) socket.connecting ? socket.destroy() : socket.resetAndDestroy();
    process.send({ type: 'stats', stats }, () => process.exit(0));
  }
});
`;

/**
 * Splits (address, count) slots over as few children as hold them, an address split if need be,
 * and gives each part its own share of LOCAL_PORTS for its address, in proportion to its count.
 */
function splitSlots(slots: { address: string; count: number }[], perProcess: number): AttackSlot[][] {
  const out: AttackSlot[][] = [[]];
  let room = perProcess;
  for (const { address, count } of slots) {
    const ports = LOCAL_PORTS.high - LOCAL_PORTS.low + 1;
    let left = count;
    let portLow = LOCAL_PORTS.low;
    while (left > 0) {
      if (room === 0) {
        out.push([]);
        room = perProcess;
      }
      const take = Math.min(left, room);
      const share = left === take ? LOCAL_PORTS.high + 1 - portLow : Math.floor((ports * take) / count);
      out.at(-1)!.push({ address, count: take, portLow, portHigh: portLow + share - 1 });
      portLow += share;
      left -= take;
      room -= take;
    }
  }
  return out;
}

export class Attackers {
  private readonly children: ChildProcess[] = [];
  private readonly waiting = new Map<ChildProcess, ((stats: AttackStats) => void)[]>();
  private readonly last = new Map<ChildProcess, AttackStats>();

  constructor(job: Omit<AttackJob, 'slots'>, slots: { address: string; count: number }[]) {
    for (const part of splitSlots(slots, SOCKETS_PER_PROCESS)) {
      const child = spawn(process.execPath, ['-e', ATTACKER_SOURCE], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      attackerPids.add(child.pid!);
      child.once('exit', () => {
        attackerPids.delete(child.pid!);
        // A child that died answers every later question with what it last said.
        for (const resolve of this.waiting.get(child)?.splice(0) ?? []) resolve(this.last.get(child) ?? emptyStats());
      });
      this.waiting.set(child, []);
      child.on('message', (m: { type: string; stats: AttackStats }) => {
        if (m.type !== 'stats') return;
        this.last.set(child, m.stats);
        this.waiting.get(child)!.shift()?.(m.stats);
      });
      child.send({ type: 'start', job: { ...job, slots: part } satisfies AttackJob });
      this.children.push(child);
    }
  }

  get processes() {
    return this.children.length;
  }

  private ask(type: 'stats' | 'stop'): Promise<AttackStats> {
    return Promise.all(
      this.children.map(
        (child) =>
          new Promise<AttackStats>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null || !child.connected) return resolve(this.last.get(child) ?? emptyStats());
            this.waiting.get(child)!.push(resolve);
            child.send({ type });
          }),
      ),
    ).then(sumStats);
  }

  stats(): Promise<AttackStats> {
    return this.ask('stats');
  }

  /** Closes every attacker socket; the children exit (killed if they have not within 5 s). */
  async stop(): Promise<AttackStats> {
    const final = await Promise.race([this.ask('stop'), sleep(10_000).then(() => null)]);
    const deadline = Date.now() + 5000;
    while (this.children.some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline) await sleep(50);
    for (const child of this.children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return final ?? sumStats([...this.last.values()]);
  }
}

function emptyStats(): AttackStats {
  return { attempted: 0, accepted: 0, refused: 0, closedAtOnce: 0, closedLater: 0, open: 0, greeted: 0, errors: {} };
}

function sumStats(all: AttackStats[]): AttackStats {
  const sum = emptyStats();
  for (const s of all) {
    for (const key of ['attempted', 'accepted', 'refused', 'closedAtOnce', 'closedLater', 'open', 'greeted'] as const) sum[key] += s[key];
    for (const [error, count] of Object.entries(s.errors)) sum.errors[error] = (sum.errors[error] ?? 0) + count;
  }
  return sum;
}

/** 127.0.0.2, 127.0.0.3, … 127.0.0.254, 127.0.1.1, …: never 127.0.0.1 (the observer's), .0 or .255. */
export function loopbackAddresses(count: number): string[] {
  const out: string[] = [];
  for (let n = 2; out.length < count; n++) {
    if (n >= 1 << 16) throw new Error(`at most ${254 * 256 - 1} loopback addresses`);
    if ((n & 255) === 0 || (n & 255) === 255) continue;
    out.push(`127.0.${n >> 8}.${n & 255}`);
  }
  return out;
}

export function checkAttackSize(name: string, slots: { address: string; count: number }[]) {
  const total = slots.reduce((n, s) => n + s.count, 0);
  if (total > MAX_ATTACK_SOCKETS) throw new Error(`${name}: ${total} connections, more than the ${MAX_ATTACK_SOCKETS} this bench allows`);
  const perAddress = new Map<string, number>();
  for (const s of slots) perAddress.set(s.address, (perAddress.get(s.address) ?? 0) + s.count);
  // Room for reconnects: a port is reused only once its slot has gone round its whole window.
  const ports = Math.floor((LOCAL_PORTS.high - LOCAL_PORTS.low + 1) * 0.8);
  for (const [address, count] of perAddress) {
    if (count > ports) throw new Error(`${name}: ${count} connections from ${address}, more than the ${ports} local ports this bench uses per address`);
  }
}
