// Types of @denokv-rs/node: the Deno.Kv API (Deno's lib.deno.unstable.d.ts, KV part).

export type KvKeyPart = Uint8Array | string | number | bigint | boolean;
export type KvKey = readonly KvKeyPart[];
export type KvConsistencyLevel = "strong" | "eventual";

export type KvListSelector =
  | { prefix: KvKey }
  | { prefix: KvKey; start: KvKey }
  | { prefix: KvKey; end: KvKey }
  | { start: KvKey; end: KvKey };

export interface KvEntry<T> {
  key: KvKey;
  value: T;
  versionstamp: string;
}

export type KvEntryMaybe<T> = KvEntry<T> | { key: KvKey; value: null; versionstamp: null };

export interface KvListOptions {
  limit?: number;
  cursor?: string;
  reverse?: boolean;
  consistency?: KvConsistencyLevel;
  batchSize?: number;
}

export interface KvCommitResult {
  ok: true;
  versionstamp: string;
}

export interface KvCommitError {
  ok: false;
}

export interface AtomicCheck {
  key: KvKey;
  versionstamp: string | null;
}

export type KvMutation = { key: KvKey } & (
  | { type: "set"; value: unknown; expireIn?: number }
  | { type: "delete" }
  | { type: "sum"; value: KvU64 | number | bigint }
  | { type: "max"; value: KvU64 }
  | { type: "min"; value: KvU64 }
);

export interface KvEnqueueOptions {
  delay?: number;
  keysIfUndelivered?: KvKey[];
  backoffSchedule?: number[];
}

export class KvU64 {
  constructor(value: bigint);
  readonly value: bigint;
  valueOf(): bigint;
  toString(): string;
}

export class KvListIterator<T> implements AsyncIterableIterator<KvEntry<T>> {
  get cursor(): string;
  next(): Promise<IteratorResult<KvEntry<T>, undefined>>;
  [Symbol.asyncIterator](): AsyncIterableIterator<KvEntry<T>>;
}

export class AtomicOperation {
  check(...checks: AtomicCheck[]): this;
  mutate(...mutations: KvMutation[]): this;
  sum(key: KvKey, n: bigint): this;
  min(key: KvKey, n: bigint): this;
  max(key: KvKey, n: bigint): this;
  set(key: KvKey, value: unknown, options?: { expireIn?: number }): this;
  delete(key: KvKey): this;
  enqueue(value: unknown, options?: KvEnqueueOptions): this;
  commit(): Promise<KvCommitResult | KvCommitError>;
}

export class Kv implements AsyncDisposable, Disposable {
  get<T = unknown>(key: KvKey, options?: { consistency?: KvConsistencyLevel }): Promise<KvEntryMaybe<T>>;
  getMany<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: KvKey }],
    options?: { consistency?: KvConsistencyLevel },
  ): Promise<{ [K in keyof T]: KvEntryMaybe<T[K]> }>;
  set(key: KvKey, value: unknown, options?: { expireIn?: number }): Promise<KvCommitResult>;
  delete(key: KvKey): Promise<void>;
  list<T = unknown>(selector: KvListSelector, options?: KvListOptions): KvListIterator<T>;
  enqueue(value: unknown, options?: KvEnqueueOptions): Promise<KvCommitResult>;
  listenQueue(handler: (value: any) => Promise<void> | void): Promise<void>;
  atomic(): AtomicOperation;
  watch<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: KvKey }],
    options?: { raw?: boolean },
  ): ReadableStream<{ [K in keyof T]: KvEntryMaybe<T[K]> }>;
  close(): void;
  [Symbol.dispose](): void;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface OpenKvOptions {
  /** File databases: the engine (default "sqlite"). */
  engine?: "sqlite" | "redb";
  /** Remote databases: the access token (default: DENO_KV_ACCESS_TOKEN). */
  accessToken?: string;
  /** Remote databases: retries of a retryable failure (default: unbounded, like Deno). */
  maxRetries?: number;
}

/**
 * Opens a database: no argument, "" or ":memory:" -> in memory; an http(s) URL -> a KV Connect
 * server; any other string -> a file (SQLite, or redb with `{ engine: "redb" }`).
 */
export function openKv(pathOrUrl?: string, options?: OpenKvOptions): Promise<Kv>;

/** Deno.errors.BadResource: the database was closed. */
export class BadResource extends Error {}
export const errors: { BadResource: typeof BadResource };
