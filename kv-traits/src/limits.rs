//! Size and count limits of requests, and their validation.
//!
//! Each violation is a [`LimitError`] whose message names the limit and the offending size.

use crate::types::{AtomicWrite, MutationKind, ReadRange};

/// The limits a database enforces. [`Limits::default`] is the Deno KV table (spec section 9),
/// with 100 checks per write as the Deno client allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Max encoded size of a key that is written (mutation keys, dead-letter keys).
    pub max_write_key_size: usize,
    /// Max encoded size of a read bound, check key or watched key (the Deno client allows 2049
    /// for watched keys, so the server does too).
    pub max_read_key_size: usize,
    /// Max size of a value or queue payload.
    pub max_value_size: usize,
    /// Max ranges per snapshot read.
    pub max_read_ranges: usize,
    /// Max sum of range limits per snapshot read.
    pub max_read_entries: usize,
    /// Max checks per atomic write.
    pub max_checks: usize,
    /// Max mutations plus enqueues per atomic write.
    pub max_mutations: usize,
    /// Max total size of an atomic write (keys, values, payloads, 4 bytes per backoff entry).
    pub max_total_mutation_size: usize,
    /// Max keys per watch.
    pub max_watched_keys: usize,
    /// Max dead-letter keys per queue message.
    pub max_undelivered_keys: usize,
    /// Max retry intervals per queue message.
    pub max_backoff_intervals: usize,
    /// Max single retry interval, ms.
    pub max_backoff_interval_ms: u32,
    /// Max delay of a queue message into the future, ms.
    pub max_queue_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_write_key_size: 2048,
            max_read_key_size: 2049,
            max_value_size: 65536,
            max_read_ranges: 10,
            max_read_entries: 1000,
            max_checks: 100,
            max_mutations: 1000,
            max_total_mutation_size: 819_200,
            max_watched_keys: 10,
            max_undelivered_keys: 10,
            max_backoff_intervals: 10,
            max_backoff_interval_ms: 3_600_000,
            max_queue_delay_ms: 30 * 24 * 60 * 60 * 1000,
        }
    }
}

/// A request exceeds a limit or has an invalid size or count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A key is longer than allowed.
    #[error("A key exceeds the key size limit ({size} bytes, max {max}).")]
    KeyTooLarge {
        /// Actual size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A key of a mutation or check is empty.
    #[error("A key of a mutation, check or watch must not be empty.")]
    EmptyKey,
    /// A value or payload is longer than allowed.
    #[error("A value exceeds the value size limit ({size} bytes, max {max}).")]
    ValueTooLarge {
        /// Actual size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Too many ranges in one read.
    #[error("Too many read ranges requested in one read request ({count}, max {max}).")]
    TooManyRanges {
        /// Actual count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The sum of range limits is too large.
    #[error("The total number of entries requested across read ranges in the read request is too large ({count}, max {max}).")]
    TooManyEntries {
        /// Actual sum.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A range limit is zero or negative.
    #[error("The read range limit of the snapshot read request is invalid (must be at least 1).")]
    InvalidRangeLimit,
    /// Too many checks.
    #[error("Too many checks included in atomic write ({count}, max {max}).")]
    TooManyChecks {
        /// Actual count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Too many mutations plus enqueues.
    #[error("Too many mutations / enqueues included in atomic write ({count}, max {max}).")]
    TooManyMutations {
        /// Actual count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The atomic write is too large in total.
    #[error("The total size of the atomic write is too large ({size} bytes, max {max}).")]
    TotalSizeTooLarge {
        /// Actual size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Too many watched keys.
    #[error("Too many keys watched in a single watch request ({count}, max {max}).")]
    TooManyWatchKeys {
        /// Actual count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Too many dead-letter keys on one message.
    #[error("Too many dead letter keys for a single queue message ({count}, max {max}).")]
    TooManyUndeliveredKeys {
        /// Actual count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Too many retry intervals on one message.
    #[error("Too many backoff intervals for a single queue message ({count}, max {max}).")]
    TooManyBackoffIntervals {
        /// Actual count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A retry interval is too long.
    #[error(
        "A backoff interval exceeds the maximum allowed backoff interval ({ms} ms, max {max} ms)."
    )]
    BackoffIntervalTooLarge {
        /// Actual interval.
        ms: u32,
        /// Limit.
        max: u32,
    },
    /// A queue message is scheduled too far in the future.
    #[error("Invalid mutation enqueue deadline: more than {max_ms} ms in the future.")]
    DeadlineTooFar {
        /// Limit.
        max_ms: u64,
    },
}

impl Limits {
    fn check_key(&self, key: &[u8], max: usize) -> Result<(), LimitError> {
        if key.len() > max {
            return Err(LimitError::KeyTooLarge {
                size: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_value(&self, size: usize) -> Result<(), LimitError> {
        if size > self.max_value_size {
            return Err(LimitError::ValueTooLarge {
                size,
                max: self.max_value_size,
            });
        }
        Ok(())
    }

    /// Validates a snapshot read.
    pub fn validate_read(&self, ranges: &[ReadRange]) -> Result<(), LimitError> {
        if ranges.len() > self.max_read_ranges {
            return Err(LimitError::TooManyRanges {
                count: ranges.len(),
                max: self.max_read_ranges,
            });
        }
        let mut total = 0usize;
        for r in ranges {
            if r.limit == 0 {
                return Err(LimitError::InvalidRangeLimit);
            }
            self.check_key(&r.start, self.max_read_key_size)?;
            self.check_key(&r.end, self.max_read_key_size)?;
            total = total.saturating_add(r.limit as usize);
        }
        if total > self.max_read_entries {
            return Err(LimitError::TooManyEntries {
                count: total,
                max: self.max_read_entries,
            });
        }
        Ok(())
    }

    /// Validates a watch request.
    pub fn validate_watch(&self, keys: &[Vec<u8>]) -> Result<(), LimitError> {
        if keys.len() > self.max_watched_keys {
            return Err(LimitError::TooManyWatchKeys {
                count: keys.len(),
                max: self.max_watched_keys,
            });
        }
        for k in keys {
            self.check_key(k, self.max_read_key_size)?;
        }
        Ok(())
    }

    /// Validates an atomic write. `now_ms` bounds enqueue deadlines.
    ///
    /// Order: counts (checks, then mutations + enqueues), then per-item sizes (checks, mutations,
    /// enqueues), then the total size.
    pub fn validate_write(&self, write: &AtomicWrite, now_ms: u64) -> Result<(), LimitError> {
        if write.checks.len() > self.max_checks {
            return Err(LimitError::TooManyChecks {
                count: write.checks.len(),
                max: self.max_checks,
            });
        }
        let count = write.mutations.len() + write.enqueues.len();
        if count > self.max_mutations {
            return Err(LimitError::TooManyMutations {
                count,
                max: self.max_mutations,
            });
        }
        let mut total = 0usize;
        for c in &write.checks {
            if c.key.is_empty() {
                return Err(LimitError::EmptyKey);
            }
            self.check_key(&c.key, self.max_read_key_size)?;
            total += c.key.len();
        }
        for m in &write.mutations {
            if m.key.is_empty() && !matches!(m.kind, MutationKind::SetSuffixVersionstampedKey(_)) {
                return Err(LimitError::EmptyKey);
            }
            // A versionstamped key grows by 22 bytes when it is created.
            let key_len = match m.kind {
                MutationKind::SetSuffixVersionstampedKey(_) => m.key.len() + 22,
                _ => m.key.len(),
            };
            self.check_key(&m.key, self.max_write_key_size)?;
            if key_len > self.max_write_key_size {
                return Err(LimitError::KeyTooLarge {
                    size: key_len,
                    max: self.max_write_key_size,
                });
            }
            total += m.key.len();
            if let Some(v) = m.value() {
                self.check_value(v.encoded_len())?;
                total += v.encoded_len();
            }
            if let MutationKind::Sum { min, max, .. } = &m.kind {
                for b in [min, max].into_iter().flatten() {
                    self.check_value(b.len())?;
                }
            }
        }
        for e in &write.enqueues {
            self.check_value(e.payload.len())?;
            total += e.payload.len();
            if e.keys_if_undelivered.len() > self.max_undelivered_keys {
                return Err(LimitError::TooManyUndeliveredKeys {
                    count: e.keys_if_undelivered.len(),
                    max: self.max_undelivered_keys,
                });
            }
            for k in &e.keys_if_undelivered {
                if k.is_empty() {
                    return Err(LimitError::EmptyKey);
                }
                self.check_key(k, self.max_write_key_size)?;
                total += k.len();
            }
            if let Some(schedule) = &e.backoff_schedule {
                if schedule.len() > self.max_backoff_intervals {
                    return Err(LimitError::TooManyBackoffIntervals {
                        count: schedule.len(),
                        max: self.max_backoff_intervals,
                    });
                }
                for &ms in schedule {
                    if ms > self.max_backoff_interval_ms {
                        return Err(LimitError::BackoffIntervalTooLarge {
                            ms,
                            max: self.max_backoff_interval_ms,
                        });
                    }
                }
                total += 4 * schedule.len();
            }
            if e.deadline_ms > now_ms.saturating_add(self.max_queue_delay_ms) {
                return Err(LimitError::DeadlineTooFar {
                    max_ms: self.max_queue_delay_ms,
                });
            }
        }
        if total > self.max_total_mutation_size {
            return Err(LimitError::TotalSizeTooLarge {
                size: total,
                max: self.max_total_mutation_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Check, Mutation};
    use crate::value::KvValue;

    #[test]
    fn read_limits() {
        let l = Limits::default();
        assert!(l.validate_read(&[ReadRange::prefix(b"a", 1000)]).is_ok());
        assert_eq!(
            l.validate_read(&[ReadRange::prefix(b"a", 600), ReadRange::prefix(b"b", 401)]),
            Err(LimitError::TooManyEntries {
                count: 1001,
                max: 1000
            })
        );
        let mut r = ReadRange::prefix(b"a", 1);
        r.limit = 0;
        assert_eq!(l.validate_read(&[r]), Err(LimitError::InvalidRangeLimit));
        let big = ReadRange {
            start: vec![1; 2050],
            end: vec![2],
            limit: 1,
            reverse: false,
        };
        assert!(matches!(
            l.validate_read(&[big]),
            Err(LimitError::KeyTooLarge { size: 2050, .. })
        ));
        let many = vec![ReadRange::prefix(b"a", 1); 11];
        assert!(matches!(
            l.validate_read(&many),
            Err(LimitError::TooManyRanges { count: 11, .. })
        ));
    }

    #[test]
    fn write_limits_name_the_limit() {
        let l = Limits::default();
        let w = AtomicWrite {
            mutations: vec![Mutation::set(vec![1; 2049], KvValue::Bytes(vec![]))],
            ..Default::default()
        };
        let e = l.validate_write(&w, 0).unwrap_err();
        assert!(e.to_string().contains("key size limit"), "{e}");
        let w = AtomicWrite {
            mutations: vec![Mutation::set(vec![1], KvValue::Bytes(vec![0; 65537]))],
            ..Default::default()
        };
        assert!(matches!(
            l.validate_write(&w, 0),
            Err(LimitError::ValueTooLarge { size: 65537, .. })
        ));
        let w = AtomicWrite {
            checks: vec![
                Check {
                    key: vec![1],
                    versionstamp: None
                };
                101
            ],
            ..Default::default()
        };
        assert!(matches!(
            l.validate_write(&w, 0),
            Err(LimitError::TooManyChecks { count: 101, .. })
        ));
        let w = AtomicWrite {
            mutations: (0..13)
                .map(|i| Mutation::set(vec![i], KvValue::Bytes(vec![0; 65536])))
                .collect(),
            ..Default::default()
        };
        assert!(matches!(
            l.validate_write(&w, 0),
            Err(LimitError::TotalSizeTooLarge { .. })
        ));
        let w = AtomicWrite {
            mutations: vec![Mutation::delete(vec![])],
            ..Default::default()
        };
        assert_eq!(l.validate_write(&w, 0), Err(LimitError::EmptyKey));
    }
}
