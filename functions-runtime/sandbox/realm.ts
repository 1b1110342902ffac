/**
 * The frozen realm (issue 4, "stateless by construction"), run inside the isolate by the
 * guest runtime. Once, when the bundle loads: every intrinsic (Object.prototype, JSON,
 * Array.prototype.map, …) is deep-frozen, and the global object's own properties are
 * made read-only. Before each batch: whatever the previous one added to the global object
 * is deleted. The function's own module is evaluated afresh for every batch (see guest.ts),
 * so its module-level `let`s start over too. A fresh context per batch would give the same
 * guarantee but costs milliseconds with a zod-sized bundle (bench/components/sandbox.bench.ts).
 *
 * Writes to frozen things fail as JavaScript says they do: silently in sloppy code, with
 * a TypeError in strict code. No Node imports: this runs inside the sandbox.
 */

/** Thrown by the guest when the realm cannot be put back (the host then starts a new context). */
export const REALM_TAINTED = 'VOLTLINE_REALM_TAINTED';

/**
 * Data properties that code commonly assigns on its own objects although a prototype
 * already has them (`this.name = 'MyError'`, `obj.toString = …`). Frozen as plain data
 * properties they would make such assignments fail ("the override mistake"), so on
 * intrinsics they become accessors that define the property on the object assigned to.
 */
const OVERRIDABLE = new Set<PropertyKey>([
  'constructor',
  'name',
  'message',
  'toString',
  'toLocaleString',
  'valueOf',
  'toJSON',
  'hasOwnProperty',
  'isPrototypeOf',
  'propertyIsEnumerable',
]);

function tameOverride(target: object, key: PropertyKey, descriptor: PropertyDescriptor): void {
  const value: unknown = descriptor.value;
  Object.defineProperty(target, key, {
    get() {
      return value;
    },
    set(this: object, next: unknown) {
      if (this === target) throw new TypeError(`Cannot assign to read only property '${String(key)}' of a frozen intrinsic`);
      Object.defineProperty(this, key, { value: next, writable: true, enumerable: true, configurable: true });
    },
    enumerable: descriptor.enumerable === true,
    configurable: false,
  });
}

/** Freezes `roots` and everything reachable from them through properties, accessors and prototypes. */
/**
 * Prototypes whose `constructor` V8 watches (its species protectors): made an accessor, it
 * turns off the fast paths of every `map`, `slice`, `then`, … in the isolate. On these it
 * stays a frozen data property: assigning `constructor` on an array or promise then fails,
 * which almost no code does. Tamed, they cost the station function 1.1 µs per event of its
 * 14 (isolate CPU in batches of 500, `npm run bench -- invocation`).
 */
function speciesWatched(): Set<object> {
  const typedArray = Object.getPrototypeOf(Int8Array) as { prototype: object };
  const watched = new Set<object>([Array.prototype, Promise.prototype, RegExp.prototype, typedArray.prototype]);
  for (const name of ['ArrayBuffer', 'SharedArrayBuffer']) {
    const ctor = (globalThis as Record<string, unknown>)[name];
    if (typeof ctor === 'function') watched.add((ctor as { prototype: object }).prototype);
  }
  return watched;
}

function harden(roots: readonly unknown[], skip: object): void {
  const watched = speciesWatched();
  const seen = new Set<object>([skip]);
  const stack: unknown[] = [...roots];
  while (stack.length > 0) {
    const item = stack.pop();
    if ((typeof item !== 'object' && typeof item !== 'function') || item === null || seen.has(item)) continue;
    seen.add(item);
    const descriptors = Object.getOwnPropertyDescriptors(item) as Record<PropertyKey, PropertyDescriptor>;
    for (const key of Reflect.ownKeys(descriptors)) {
      const descriptor = descriptors[key as string];
      if (descriptor === undefined) continue;
      if ('value' in descriptor) {
        const overridable = OVERRIDABLE.has(key) && !(key === 'constructor' && watched.has(item));
        if (descriptor.writable === true && descriptor.configurable === true && overridable) tameOverride(item, key, descriptor);
        stack.push(descriptor.value);
      } else {
        stack.push(descriptor.get, descriptor.set);
      }
    }
    stack.push(Object.getPrototypeOf(item));
    Object.freeze(item);
  }
}

/** Intrinsics that no global names but every script can reach. */
function hiddenIntrinsics(): unknown[] {
  const proto = Object.getPrototypeOf;
  // Only their prototypes are wanted.
  const kinds = [async function () {}, function* () {}, async function* () {}, () => {}];
  const iterators = [[][Symbol.iterator](), new Map()[Symbol.iterator](), new Set()[Symbol.iterator](), ''[Symbol.iterator](), /a/g[Symbol.matchAll]('a')];
  return [
    ...kinds.map((fn) => proto(fn) as unknown),
    ...kinds.map((fn) => (fn as { prototype?: unknown }).prototype),
    ...iterators.map((it) => proto(it) as unknown),
    proto(Int8Array) as unknown,
    proto(globalThis) as unknown,
  ];
}

export interface Realm {
  /**
   * Deletes what earlier invocations added to the global object and puts back its
   * prototype. False when that is impossible (it was made non-extensible, or a property
   * was added non-configurable): the caller must start over in a new context.
   */
  reset(): boolean;
}

/**
 * Freezes the intrinsics (the built-in globals, which unlike what scripts add are not
 * enumerable, and the hidden ones) and the `shared` module objects themselves (not what
 * they reach: libraries such as zod keep mutable state of their own), and makes the
 * global object's current properties read-only. Call once, after the libraries are loaded
 * and before any of the function's own code runs.
 */
export function lockdown(shared: readonly object[]): Realm {
  const global = globalThis as Record<PropertyKey, unknown>;
  const baselineKeys = new Set<PropertyKey>(Reflect.ownKeys(global));
  const baselineProto = Object.getPrototypeOf(global) as object | null;
  const roots: unknown[] = hiddenIntrinsics();
  for (const key of baselineKeys) {
    const descriptor = Object.getOwnPropertyDescriptor(global, key);
    if (descriptor === undefined || descriptor.enumerable === true) continue;
    roots.push(descriptor.value, descriptor.get, descriptor.set);
  }
  harden(roots, global);
  for (const module of shared) Object.freeze(module);
  for (const key of baselineKeys) {
    const descriptor = Object.getOwnPropertyDescriptor(global, key);
    if (descriptor?.configurable !== true) continue;
    Object.defineProperty(global, key, 'value' in descriptor ? { writable: false, configurable: false } : { configurable: false });
  }
  return {
    reset(): boolean {
      if (!Object.isExtensible(global)) return false;
      if (Object.getPrototypeOf(global) !== baselineProto && !Reflect.setPrototypeOf(global, baselineProto)) return false;
      for (const key of Reflect.ownKeys(global)) {
        if (!baselineKeys.has(key) && !Reflect.deleteProperty(global, key)) return false;
      }
      return true;
    },
  };
}
