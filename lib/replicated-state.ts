/**
 * State shared by the nodes of a cluster (issue 16, "Several nodes"): the deployed functions,
 * the devices and the operator tokens, each kept by its registry in its own files and, with a
 * `ReplicatedState`, in one ordered log every node reads (the Kafka implementation is
 * `ingest/cluster/kafka-state.ts`: one compacted topic of one partition). Types only: the
 * registries depend on this interface, never on Kafka.
 *
 * The protocol, for a registry that is given a `ReplicatedState`:
 * - it `register`s a kind (`function`, `device`, `operator`) when it opens, with a handler;
 * - `start()` (called by the platform once every registry is open, before it serves) reads
 *   the whole log and hands each kind its state once (`replace`), so a node starts with the
 *   cluster's state; the registry makes its memory and files match it;
 * - a local change is not written by the registry: it is `publish`ed, and applied when the
 *   log hands it back (`apply`), on every node in the same order, the writer's included.
 *   Publish-then-apply is chosen over apply-then-publish because the log's order is then the
 *   only order: two nodes changing the same entry at once end with the same value everywhere
 *   (the later record), where applying first would leave each node with its own change
 *   last. `publish` resolves once the change is applied on this node, so an API answer given
 *   after it reflects the change;
 * - a remote change reaches `apply` like a local one: the registry writes its files (a
 *   restart without the log still has the last state) and fires its change listeners.
 *
 * Values are the registries' own stored records as JSON (a device's token hash, a function's
 * file with its settings and key, an operator token's hash): nothing travels that the data
 * folder does not already hold.
 */

/** One entry's new value: the registry's stored record (JSON), or null when it is removed. */
export interface ReplicatedChange {
  readonly key: string;
  readonly value: unknown;
}

/** A change as the log hands it back: `local` when this node published it. */
export interface AppliedChange extends ReplicatedChange {
  readonly local: boolean;
}

/** What a registry gives the replicated state for its kind of entry. */
export interface ReplicatedKind {
  /**
   * The registry's entries as its files hold them (values as `publish` takes them), read
   * when this data folder first joins the log: those the log does not have are published
   * (the seed), so neither an empty log nor a node joining with state of its own loses it.
   */
  local(): Iterable<ReplicatedChange>;
  /**
   * The kind's whole state as the log holds it, once, before the platform serves: the
   * registry makes its memory and files match (entries absent from it are removed) and fires
   * its change listeners for what differs.
   */
  replace(entries: ReadonlyMap<string, unknown>): Promise<void>;
  /**
   * Changes in log order after `replace`, local ones included (applied again idempotently:
   * an equal value changes nothing). A value the registry cannot read is logged and skipped,
   * never thrown: the log would otherwise stop for every node.
   */
  apply(changes: readonly AppliedChange[]): Promise<void>;
}

export interface ReplicatedState {
  /** Registers the handler of `kind` (one per kind); before `start`. */
  register(kind: string, handler: ReplicatedKind): void;
  /**
   * Writes `changes` (all of `kind`, applied in this order) to the log and resolves once
   * they are applied on this node. Rejects with a retriable VoltlineError
   * (`VL_CLUSTER_STATE_UNAVAILABLE`) when the log cannot be written: the change did not
   * happen here (and, unless the message says the write was sent, nowhere).
   */
  publish(kind: string, changes: readonly ReplicatedChange[]): Promise<void>;
}
