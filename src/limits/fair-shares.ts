/**
 * Things a cap counts (connections, sessions), kept per address group, oldest first: the count
 * for the whole process, each group's, and at a full cap the one to drop so that a newcomer gets
 * in. The one dropped is the oldest of the group holding the most: many addresses together
 * cannot push out an address holding few, and one address cannot push out anyone.
 *
 * Each group is a linked list, and a member leaves through the function `add` returned, not by
 * a lookup: no Map or Set holds the members. Every connection goes through here, and a Map that
 * members enter and leave all day kept closed connections alive past V8's young collections: a
 * long-lived Map's table is in the old generation, and the tables it outgrows (left to the next
 * full collection) still point at the members they held. Under the perf rig's load that, with
 * V8's pretenuring (process/heap.ts), promoted most of every closed connection's objects (README
 * "Memory"). A node that leaves is unlinked and emptied, so that it points at nothing either.
 */
type Node<T> = { member: T | undefined; since: number; previous: Node<T> | null; next: Node<T> | null };
type Group<T> = { oldest: Node<T> | null; newest: Node<T> | null; size: number };

export class FairShares<T> {
  private readonly groups = new Map<string, Group<T>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  sizeOf(group: string): number {
    return this.groups.get(group)?.size ?? 0;
  }

  /** Every member, group by group (a copy: members may be dropped while it is walked). */
  all(): T[] {
    const members: T[] = [];
    for (const group of this.groups.values()) {
      for (let node = group.oldest; node; node = node.next) members.push(node.member as T);
    }
    return members;
  }

  /**
   * Counts `member` in `group` (each call is a membership of its own). Returns its leaving:
   * true the first time, false after (so a second release is harmless).
   */
  add(groupName: string, member: T): () => boolean {
    let group = this.groups.get(groupName);
    if (!group) this.groups.set(groupName, (group = { oldest: null, newest: null, size: 0 }));
    const node: Node<T> = { member, since: performance.now(), previous: group.newest, next: null };
    if (group.newest) group.newest.next = node;
    else group.oldest = node;
    group.newest = node;
    group.size++;
    this.count++;
    let counted = true;
    return () => {
      if (!counted) return false;
      counted = false;
      this.unlink(groupName, group, node);
      return true;
    };
  }

  private unlink(groupName: string, group: Group<T>, node: Node<T>): void {
    if (node.previous) node.previous.next = node.next;
    else group.oldest = node.next;
    if (node.next) node.next.previous = node.previous;
    else group.newest = node.previous;
    node.previous = node.next = null;
    node.member = undefined;
    group.size--;
    this.count--;
    if (group.size === 0) this.groups.delete(groupName);
  }

  /**
   * The member to drop for a newcomer of `group`: the oldest of the group holding the most (of
   * equally busy groups, the member there longest), provided that group holds more than the
   * newcomer's and at least `atLeast`. Undefined when no group qualifies: then refuse the newcomer.
   */
  victimFor(group: string, atLeast = 1): T | undefined {
    let victim: Node<T> | null = null;
    let victimCount = 0;
    for (const { oldest, size } of this.groups.values()) {
      if (!oldest || size < victimCount) continue;
      if (!victim || size > victimCount || oldest.since < victim.since) {
        victim = oldest;
        victimCount = size;
      }
    }
    return victim && victimCount > this.sizeOf(group) && victimCount >= atLeast ? victim.member : undefined;
  }
}
