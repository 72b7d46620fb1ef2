// ESM entry point: the same objects as the CommonJS entry (index.js).
import cjs from "./index.js";

export const { openKv, Kv, AtomicOperation, KvListIterator, KvU64, BadResource, errors } = cjs;
export default cjs;
