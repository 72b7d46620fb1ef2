pub struct MemoryBackend;
