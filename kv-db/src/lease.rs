//! Named leases: cross-process leadership over the database itself, for jobs of which only one
//! process may run at a time on a shared store (one backup shipper per database).
//!
//! A lease is one record, `00 'L' ‖ name` → `holder (16 bytes) ‖ expiry ms BE` (see
//! [`crate::layout`]). Contract:
//! - [`Db::acquire_lease`] reads the record and, in the same backend write transaction, takes
//!   the lease when it is absent or expired, or renews it when `owner` already holds it (expired
//!   or not): the new expiry is the database clock's reading in that transaction plus `ttl`.
//!   A lease held by another owner and not expired is left alone and reported as
//!   [`LeaseState::Taken`]. [`Db::release_lease`] deletes the record only if `owner` holds it.
//! - Because the read and the write share one write transaction, and write transactions are
//!   totally ordered across every process of a shared store ([`kv_traits::Backend`], "Shared
//!   stores"), two owners never both get [`LeaseState::Held`] for overlapping times, as long as
//!   the processes' clocks agree to well within `ttl` (the expiry is written with the
//!   acquirer's clock and judged with the next acquirer's).
//! - A lease operation goes through the writer like every other write (so it is answered only
//!   once committed), but it is not a commit of data: it does not move the database version,
//!   is not in the change log or the commit feed, wakes no watcher and does not count as
//!   diverging for [`Db::imported_through`].
//! - A holder is only told what the record said when its transaction committed: it must stop
//!   its job before `expires_at_ms` unless a renewal succeeded, and treat a failed renewal
//!   (an error) as a lost lease.
//! - Read-only databases refuse both calls with [`KvError::WriteDisabled`].

use std::fmt;
use std::time::Duration;

use kv_traits::{BackendError, KvError};

use crate::layout;
use crate::writer::Op;
use crate::Db;

/// Who holds a lease: 16 bytes, random per holder (one per process and job).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseOwner(pub [u8; 16]);

impl LeaseOwner {
    /// A fresh random owner.
    pub fn random() -> Self {
        LeaseOwner(rand::random())
    }
}

impl fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LeaseOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseOwner({self})")
    }
}

/// What a lease record says after a lease operation committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// The caller holds the lease until `expires_at_ms` (database clock).
    Held {
        /// When the lease expires unless renewed.
        expires_at_ms: u64,
    },
    /// Another owner holds the lease until `expires_at_ms`.
    Taken {
        /// The holder.
        owner: LeaseOwner,
        /// When its lease expires unless renewed.
        expires_at_ms: u64,
    },
    /// Nobody holds the lease (after a release, or it had expired).
    Free,
}

/// What the writer is asked to do with a lease.
pub(crate) struct LeaseRequest {
    /// The lease's name.
    pub name: Vec<u8>,
    /// Who asks.
    pub owner: LeaseOwner,
    /// `Some(ttl_ms)`: acquire or renew for that long; `None`: release.
    pub ttl_ms: Option<u64>,
}

/// The record key of the lease `name`.
pub(crate) fn record_key(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(layout::META_LEASE.len() + name.len());
    k.extend_from_slice(layout::META_LEASE);
    k.extend_from_slice(name);
    k
}

/// `holder ‖ expiry ms BE`.
pub(crate) fn encode_record(owner: LeaseOwner, expires_at_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&owner.0);
    v.extend_from_slice(&expires_at_ms.to_be_bytes());
    v
}

/// Inverse of [`encode_record`].
pub(crate) fn decode_record(b: &[u8]) -> Result<(LeaseOwner, u64), BackendError> {
    let (owner, expiry) = match b.split_first_chunk::<16>() {
        Some((owner, rest)) if rest.len() == 8 => (*owner, layout::decode_u64(rest)?),
        _ => return Err(BackendError::Corrupt("malformed lease record".into())),
    };
    Ok((LeaseOwner(owner), expiry))
}

impl Db {
    /// Takes or renews the lease `name` for `owner` for `ttl` (see the module docs).
    pub async fn acquire_lease(
        &self,
        name: &str,
        owner: LeaseOwner,
        ttl: Duration,
    ) -> Result<LeaseState, KvError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.lease_op(name, owner, Some(ttl_ms)).await
    }

    /// Gives the lease `name` up if `owner` holds it; returns what the record says afterwards
    /// ([`LeaseState::Free`], or [`LeaseState::Taken`] when another owner holds it).
    pub async fn release_lease(
        &self,
        name: &str,
        owner: LeaseOwner,
    ) -> Result<LeaseState, KvError> {
        self.lease_op(name, owner, None).await
    }

    /// Whether other processes may write to this database's store too
    /// ([`kv_traits::Backend::shared`]): jobs that must run once per database then coordinate
    /// through a lease.
    pub fn is_shared(&self) -> bool {
        self.inner.backend.shared()
    }

    async fn lease_op(
        &self,
        name: &str,
        owner: LeaseOwner,
        ttl_ms: Option<u64>,
    ) -> Result<LeaseState, KvError> {
        self.check_writable()?;
        let request = LeaseRequest {
            name: name.as_bytes().to_vec(),
            owner,
            ttl_ms,
        };
        self.inner.call(|reply| Op::Lease { request, reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_malformed_ones_are_corrupt() {
        let owner = LeaseOwner([7; 16]);
        let v = encode_record(owner, 1234);
        assert_eq!(decode_record(&v).unwrap(), (owner, 1234));
        for cut in 0..v.len() {
            assert!(decode_record(&v[..cut]).is_err());
        }
        let mut long = v.clone();
        long.push(0);
        assert!(decode_record(&long).is_err());
        assert_eq!(record_key(b"backup"), b"\x00Lbackup".to_vec());
        assert_eq!(owner.to_string(), "07".repeat(16));
    }
}
