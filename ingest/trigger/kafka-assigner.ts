/**
 * How the routers of a cluster share the trigger log's partitions: a kafkajs partition
 * assigner that is zone-aware and sticky (kafkajs' own is round-robin over sorted member ids).
 *
 * - **Balanced:** every member gets ⌊P/M⌋ or ⌈P/M⌉ partitions of each topic.
 * - **Zones spread:** members are taken zone by zone in turn (z1's first, z2's first, z1's
 *   second, …), so the partitions that move are handed out across zones, and each zone holds
 *   a share in proportion to its members: losing a zone moves only that zone's share, onto
 *   the members of the others.
 * - **Sticky:** each member says which partitions it holds now (in its join metadata); a
 *   member keeps them up to its share, so a node joining or leaving moves only the partitions
 *   it must. kafkajs rebalances eagerly (every member rejoins), but the trigger log keeps
 *   reading a partition it is given again without a gap or a duplicate (kafka-log.ts), so
 *   fewer moves mean fewer events run twice.
 *
 * Member metadata `userData`: UTF-8 JSON `{ "zone": "z1" | null, "owned": { "<topic>": [0, 3] } }`.
 * A member of another version (no or unreadable userData) counts as zone-less, owning nothing.
 */
import kafkajs, { type Assignment, type GroupMember, type GroupMemberAssignment, type GroupState, type PartitionAssigner } from 'kafkajs';

/** The assigner's protocol name: every member of a group must offer it (a rolling upgrade from another would not join). */
export const ZONE_ASSIGNER_NAME = 'VoltlineZoneSticky';

interface MemberInfo {
  readonly memberId: string;
  readonly zone: string;
  readonly owned: Readonly<Record<string, readonly number[]>>;
}

/**
 * Decides the assignment: pure, deterministic (members and partitions in a fixed order), for
 * the assigner and its tests. `partitions[topic]` lists every partition of the topic.
 */
export function assignPartitions(
  members: readonly MemberInfo[],
  partitions: Readonly<Record<string, readonly number[]>>,
): Map<string, Record<string, number[]>> {
  const byZone = new Map<string, MemberInfo[]>();
  for (const member of [...members].sort((a, b) => (a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0))) {
    const list = byZone.get(member.zone) ?? [];
    list.push(member);
    byZone.set(member.zone, list);
  }
  // Zones in turn: the order new partitions are dealt in, and who gets the larger shares.
  const zones = [...byZone.keys()].sort();
  const order: MemberInfo[] = [];
  for (let i = 0; order.length < members.length; i++)
    for (const zone of zones) if (byZone.get(zone)?.[i] !== undefined) order.push(byZone.get(zone)?.[i] as MemberInfo);
  const result = new Map<string, Record<string, number[]>>(order.map((m) => [m.memberId, {}]));
  if (order.length === 0) return result;
  for (const topic of Object.keys(partitions).sort()) {
    const all = [...(partitions[topic] ?? [])].sort((a, b) => a - b);
    const base = Math.floor(all.length / order.length);
    const extra = all.length % order.length;
    const share = new Map(order.map((m, i) => [m.memberId, base + (i < extra ? 1 : 0)]));
    const taken = new Set<number>();
    const mine = new Map<string, number[]>(order.map((m) => [m.memberId, []]));
    // Keep what each member holds, up to its share (a partition two claim goes to the first).
    for (const member of order) {
      const list = mine.get(member.memberId) ?? [];
      for (const p of [...(member.owned[topic] ?? [])].sort((a, b) => a - b)) {
        if (list.length >= (share.get(member.memberId) ?? 0)) break;
        if (taken.has(p) || !all.includes(p)) continue;
        taken.add(p);
        list.push(p);
      }
    }
    // Deal the rest in zone order to those under their share.
    let next = 0;
    for (const p of all) {
      if (taken.has(p)) continue;
      for (let tries = 0; tries < order.length; tries++) {
        const member = order[next % order.length] as MemberInfo;
        next += 1;
        const list = mine.get(member.memberId) ?? [];
        if (list.length < (share.get(member.memberId) ?? 0)) {
          list.push(p);
          taken.add(p);
          break;
        }
      }
    }
    for (const [memberId, list] of mine) {
      const entry = result.get(memberId);
      if (entry !== undefined && list.length > 0) entry[topic] = list.sort((a, b) => a - b);
    }
  }
  return result;
}

function memberInfo(member: GroupMember): MemberInfo {
  try {
    const metadata = kafkajs.AssignerProtocol.MemberMetadata.decode(member.memberMetadata);
    const data = JSON.parse(metadata?.userData.toString('utf8') ?? '{}') as { zone?: unknown; owned?: unknown };
    const owned: Record<string, number[]> = {};
    if (typeof data.owned === 'object' && data.owned !== null)
      for (const [topic, list] of Object.entries(data.owned as Record<string, unknown>))
        if (Array.isArray(list)) owned[topic] = list.filter((p): p is number => Number.isInteger(p));
    return { memberId: member.memberId, zone: typeof data.zone === 'string' ? data.zone : '', owned };
  } catch {
    return { memberId: member.memberId, zone: '', owned: {} };
  }
}

/**
 * The assigner for a consumer of this node: `zone` is this node's (`--zone`, or undefined),
 * `owned()` what it holds now (read when it joins).
 */
export function zoneAssigner(zone: string | undefined, owned: () => Readonly<Record<string, readonly number[]>>): PartitionAssigner {
  return ({ cluster }) => ({
    name: ZONE_ASSIGNER_NAME,
    version: 1,
    async assign({ members, topics }: { members: GroupMember[]; topics: string[] }): Promise<GroupMemberAssignment[]> {
      const partitions: Record<string, number[]> = {};
      for (const topic of topics) partitions[topic] = cluster.findTopicPartitionMetadata(topic).map((m) => m.partitionId);
      const decided = assignPartitions(members.map(memberInfo), partitions);
      return members.map(({ memberId }) => ({
        memberId,
        memberAssignment: kafkajs.AssignerProtocol.MemberAssignment.encode({
          version: 1,
          assignment: (decided.get(memberId) ?? {}) as Assignment,
          userData: Buffer.alloc(0),
        }),
      }));
    },
    protocol({ topics }: { topics: string[] }): GroupState {
      const userData = Buffer.from(JSON.stringify({ zone: zone ?? null, owned: owned() }), 'utf8');
      return { name: ZONE_ASSIGNER_NAME, metadata: kafkajs.AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData }) };
    },
  });
}
