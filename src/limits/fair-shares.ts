/**
 * Things a cap counts (connections, sessions), kept per address group, oldest first: the count
 * for the whole process, each group's, and at a full cap the one to drop so that a newcomer gets
 * in. The one dropped is the oldest of the group holding the most: many addresses together
 * cannot push out an address holding few, and one address cannot push out anyone.
 */
export class FairShares<T> {
  /** Per group, its members and when each joined (a Map keeps insertion order: oldest first). */
  private readonly groups = new Map<string, Map<T, number>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  sizeOf(group: string): number {
    return this.groups.get(group)?.size ?? 0;
  }

  /** Every member, group by group (a copy: members may be dropped while it is walked). */
  all(): T[] {
    return [...this.groups.values()].flatMap((members) => [...members.keys()]);
  }

  add(group: string, member: T): void {
    let members = this.groups.get(group);
    if (!members) this.groups.set(group, (members = new Map()));
    if (members.has(member)) return;
    members.set(member, performance.now());
    this.count++;
  }

  /** False when `member` was not counted (so a second release is harmless). */
  delete(group: string, member: T): boolean {
    const members = this.groups.get(group);
    if (!members?.delete(member)) return false;
    if (members.size === 0) this.groups.delete(group);
    this.count--;
    return true;
  }

  /**
   * The member to drop for a newcomer of `group`: the oldest of the group holding the most (of
   * equally busy groups, the member there longest), provided that group holds more than the
   * newcomer's and at least `atLeast`. Undefined when no group qualifies: then refuse the newcomer.
   */
  victimFor(group: string, atLeast = 1): T | undefined {
    let victim: T | undefined;
    let victimCount = 0;
    let victimSince = Infinity;
    for (const members of this.groups.values()) {
      if (members.size < victimCount) continue;
      const [oldest, since] = members.entries().next().value as [T, number];
      if (members.size > victimCount || since < victimSince) {
        victim = oldest;
        victimCount = members.size;
        victimSince = since;
      }
    }
    return victimCount > this.sizeOf(group) && victimCount >= atLeast ? victim : undefined;
  }
}
