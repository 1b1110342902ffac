/**
 * The trigger log's partition assignment (kafka-assigner.ts): balanced, spread across zones,
 * sticky. Pure: the decision alone; kafka-log.test.ts runs it in real consumer groups.
 */
import { describe, expect, it } from 'vitest';
import { assignPartitions } from './kafka-assigner.ts';

const T = 'voltline.events';
const twelve = { [T]: Array.from({ length: 12 }, (_, i) => i) };
const member = (memberId: string, zone = '', owned: number[] = []) => ({ memberId, zone, owned: { [T]: owned } });
const shares = (decided: Map<string, Record<string, number[]>>) => Object.fromEntries([...decided].map(([id, a]) => [id, a[T] ?? []]));

describe('assignPartitions', () => {
  it('gives every member ⌊P/M⌋ or ⌈P/M⌉ partitions, each partition to one member', () => {
    const decided = shares(assignPartitions([member('a'), member('b'), member('c'), member('d'), member('e')], twelve));
    expect(
      Object.values(decided)
        .map((list) => list.length)
        .sort(),
    ).toEqual([2, 2, 2, 3, 3]);
    expect(
      Object.values(decided)
        .flat()
        .sort((x, y) => x - y),
    ).toEqual(twelve[T]);
  });

  it('holds each zone a share in proportion to its members, so losing a zone moves only its share', () => {
    const members = [member('a1', 'z1'), member('a2', 'z1'), member('b1', 'z2'), member('b2', 'z2')];
    const before = shares(assignPartitions(members, twelve));
    const zoneCount = (zone: string) => members.filter((m) => m.zone === zone).reduce((n, m) => n + (before[m.memberId]?.length ?? 0), 0);
    expect([zoneCount('z1'), zoneCount('z2')]).toEqual([6, 6]);
    // z2 is lost: z1's members keep theirs and take z2's.
    const after = shares(assignPartitions([member('a1', 'z1', before['a1']), member('a2', 'z1', before['a2'])], twelve));
    expect(after['a1']).toEqual(expect.arrayContaining(before['a1'] ?? []));
    expect(after['a2']).toEqual(expect.arrayContaining(before['a2'] ?? []));
    expect([...(after['a1'] ?? []), ...(after['a2'] ?? [])].sort((x, y) => x - y)).toEqual(twelve[T]);
  });

  it('deals an odd share across zones: three members in two zones get 4 partitions each', () => {
    const decided = shares(assignPartitions([member('a', 'z1'), member('b', 'z1'), member('c', 'z2')], twelve));
    expect(Object.values(decided).map((list) => list.length)).toEqual([4, 4, 4]);
  });

  it('is sticky: a node joining takes partitions only from those above the new share', () => {
    const two = shares(assignPartitions([member('a'), member('b')], twelve));
    const three = shares(assignPartitions([member('a', '', two['a']), member('b', '', two['b']), member('c')], twelve));
    expect(three['c']).toHaveLength(4);
    // Only the 4 partitions c now holds moved; a and b kept 4 of their 6 each.
    expect((three['a'] ?? []).every((p) => (two['a'] ?? []).includes(p))).toBe(true);
    expect((three['b'] ?? []).every((p) => (two['b'] ?? []).includes(p))).toBe(true);
  });

  it('gives a partition two members claim to the first, and ignores claims on partitions that do not exist', () => {
    const decided = shares(assignPartitions([member('a', '', [0, 1, 99]), member('b', '', [0, 1])], { [T]: [0, 1, 2, 3] }));
    expect(decided['a']).toEqual([0, 1]);
    expect(decided['b']).toEqual([2, 3]);
  });

  it('is deterministic: the same members in another order get the same partitions', () => {
    const members = [member('c', 'z2'), member('a', 'z1'), member('b', 'z1')];
    expect(shares(assignPartitions(members, twelve))).toEqual(shares(assignPartitions([...members].reverse(), twelve)));
  });
});
