//! The writer's side of named leases (see [`crate::lease`]): reading and replacing a lease
//! record inside the batch's write transaction.
//!
//! Contract: a lease operation only ever touches its own record; it takes no version, logs
//! nothing and records no changed key, so a batch of nothing but lease operations commits
//! without moving the database version or storing a commit-feed entry. The expiry is computed
//! from the batch's clock reading ([`Cx::now`]). A malformed record refuses the operation alone
//! (the rest of the batch commits).

use kv_traits::KvError;

use super::overlay::{ApplyError, Cx};
use crate::lease::{self, LeaseRequest, LeaseState};

impl Cx<'_> {
    pub(super) async fn apply_lease(
        &mut self,
        request: LeaseRequest,
    ) -> Result<LeaseState, ApplyError> {
        let key = lease::record_key(&request.name);
        let current = match self.get(&key).await? {
            Some(b) => Some(lease::decode_record(&b).map_err(KvError::Backend)?),
            None => None,
        };
        let now = self.now;
        // Another owner's unexpired lease, if any.
        let other = current.filter(|&(owner, expiry)| owner != request.owner && expiry > now);
        match (request.ttl_ms, other) {
            (_, Some((owner, expires_at_ms))) => Ok(LeaseState::Taken {
                owner,
                expires_at_ms,
            }),
            (Some(ttl_ms), None) => {
                let expires_at_ms = now.saturating_add(ttl_ms);
                self.put(key, lease::encode_record(request.owner, expires_at_ms));
                Ok(LeaseState::Held { expires_at_ms })
            }
            (None, None) => {
                if current.is_some() {
                    self.delete(key);
                }
                Ok(LeaseState::Free)
            }
        }
    }
}
