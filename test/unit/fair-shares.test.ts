import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { FairShares } from '../../src/limits/fair-shares.js';

describe('FairShares', () => {
  it('counts per group and in all; a release counts out once', () => {
    const shares = new FairShares<string>();
    const leaveA1 = shares.add('a', 'a1');
    shares.add('a', 'a2');
    const leaveB1 = shares.add('b', 'b1');
    expect([shares.size, shares.sizeOf('a'), shares.sizeOf('b'), shares.sizeOf('c')]).toEqual([3, 2, 1, 0]);
    expect(shares.all()).toEqual(['a1', 'a2', 'b1']);
    expect(leaveA1()).toBe(true);
    expect(leaveA1()).toBe(false);
    expect([shares.size, shares.sizeOf('a')]).toEqual([2, 1]);
    expect(leaveB1()).toBe(true);
    expect(shares.all()).toEqual(['a2']);
    expect(shares.sizeOf('b')).toBe(0);
    shares.add('b', 'b2'); // an emptied group starts again
    expect(shares.all()).toEqual(['a2', 'b2']);
  });

  it('picks the oldest of the busiest group, only when it holds more than the newcomer and at least atLeast', () => {
    const shares = new FairShares<string>();
    shares.add('a', 'a1');
    const leaveB1 = shares.add('b', 'b1');
    shares.add('b', 'b2');
    shares.add('b', 'b3');
    expect(shares.victimFor('c')).toBe('b1');
    expect(shares.victimFor('b')).toBeUndefined(); // the newcomer's own group is the busiest
    leaveB1();
    expect(shares.victimFor('c')).toBe('b2'); // the next oldest, the middle of the list unlinked right
    expect(shares.victimFor('c', 3)).toBeUndefined();
    const leaveA2 = shares.add('a', 'a2');
    expect(shares.victimFor('c')).toBe('a1'); // equally busy: the member there longest
    leaveA2();
    expect(shares.victimFor('c')).toBe('b2');
  });

  it('keeps nothing of a member that left, though its release function lives on', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const shares = new FairShares<object>();
    const kept = shares.add('a', {});
    let member: object | null = { payload: new Array(1000).fill(1) };
    const leave = shares.add('a', member);
    const gone = new WeakRef(member);
    member = null;
    leave();
    // A WeakRef's target is kept until the current job ends: collect in a later one.
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    expect(gone.deref()).toBeUndefined();
    expect(shares.size).toBe(1);
    expect(typeof leave).toBe('function');
    kept();
  });
});
