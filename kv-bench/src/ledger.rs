//! The bank workload's ledger and its verification: what the clients were told, checked against
//! what the database holds afterwards.
//!
//! Every transfer writes, in the same atomic write as the two new balances, a record under a
//! key of its own (never reused) whose value is [`Transfer::encode`]. The clients note every
//! transfer whose write was acknowledged and every one whose outcome is unknown (the write was
//! sent, no definite answer came back). [`verify`] then holds the final state to this contract:
//! - the total balance is `accounts × initial`;
//! - every acknowledged transfer's record exists, with the content the client wrote;
//! - a record exists only for an acknowledged or unknown-outcome transfer (no phantom writes),
//!   with the content that client wrote;
//! - every account's balance is its initial balance plus the deltas of the records that exist
//!   (so a transfer applied twice, or applied without its record, shows up);
//! - unknown outcomes may or may not have been applied: both are counted.
//!
//! [`Monotonic`] checks what one auditor observes over time: the highest versionstamp among
//! the accounts never goes backwards from one read to the next (whichever server answered),
//! and two reads at the same versionstamp see the same balances.

use std::collections::BTreeMap;

use serde::Serialize;

/// One transfer: `amount` moved from account `from` to account `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Debited account (index).
    pub from: u64,
    /// Credited account (index).
    pub to: u64,
    /// Amount moved.
    pub amount: u64,
}

impl Transfer {
    /// The record's value: `from ‖ to ‖ amount`, little-endian u64s.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        out
    }

    /// Parses a record's value.
    pub fn decode(bytes: &[u8]) -> Option<Transfer> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        if bytes.len() != 24 {
            return None;
        }
        Some(Transfer {
            from: word(0)?,
            to: word(1)?,
            amount: word(2)?,
        })
    }
}

/// What the clients were told, by record key.
#[derive(Default, Debug, Clone)]
pub struct Ledger {
    /// Transfers whose write was acknowledged as committed.
    pub acked: BTreeMap<Vec<u8>, Transfer>,
    /// Transfers whose write was sent without a definite answer.
    pub unknown: BTreeMap<Vec<u8>, Transfer>,
}

/// The result of [`verify`].
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Verdict {
    /// Acknowledged transfers.
    pub acknowledged: u64,
    /// Unknown-outcome transfers.
    pub unknown: u64,
    /// Unknown-outcome transfers whose record exists (applied).
    pub unknown_applied: u64,
    /// Unknown-outcome transfers whose record does not exist (not applied).
    pub unknown_not_applied: u64,
    /// Records found (applied transfers).
    pub applied: u64,
    /// Whether the total balance is unchanged.
    pub balance_ok: bool,
    /// Whether every account's balance matches the applied records.
    pub accounts_ok: bool,
    /// Every violation found (empty when the state is consistent).
    pub violations: Vec<String>,
}

impl Verdict {
    /// Whether the state satisfies the contract.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Holds the final `balances` (one per account, in order) and `records` (record key → value) to
/// the contract of the module docs.
pub fn verify(
    initial: u64,
    balances: &[u64],
    records: &BTreeMap<Vec<u8>, Vec<u8>>,
    ledger: &Ledger,
) -> Verdict {
    let mut v = Verdict {
        acknowledged: ledger.acked.len() as u64,
        unknown: ledger.unknown.len() as u64,
        applied: records.len() as u64,
        ..Verdict::default()
    };
    let push = |v: &mut Verdict, msg: String| {
        if v.violations.len() < 20 {
            v.violations.push(msg);
        }
    };
    let n = balances.len() as u64;
    let expected_total = u128::from(initial) * u128::from(n);
    let total: u128 = balances.iter().map(|&b| u128::from(b)).sum();
    v.balance_ok = total == expected_total;
    if !v.balance_ok {
        push(
            &mut v,
            format!("total balance {total}, expected {expected_total}"),
        );
    }
    let mut expected: Vec<i128> = vec![i128::from(initial); balances.len()];
    for (key, value) in records {
        let Some(t) = Transfer::decode(value) else {
            push(&mut v, format!("record {key:02x?} holds {value:02x?}"));
            continue;
        };
        match ledger.acked.get(key).or_else(|| ledger.unknown.get(key)) {
            None => push(
                &mut v,
                format!("record {key:02x?} ({t:?}) of no acknowledged or unknown transfer"),
            ),
            Some(wrote) if *wrote != t => push(
                &mut v,
                format!("record {key:02x?} holds {t:?}, the client wrote {wrote:?}"),
            ),
            Some(_) => {}
        }
        if t.from >= n || t.to >= n {
            push(&mut v, format!("record {key:02x?} names no account: {t:?}"));
            continue;
        }
        expected[t.from as usize] -= i128::from(t.amount);
        expected[t.to as usize] += i128::from(t.amount);
    }
    for (key, t) in &ledger.acked {
        if !records.contains_key(key) {
            push(
                &mut v,
                format!("acknowledged transfer {t:?} has no record {key:02x?}"),
            );
        }
    }
    for key in ledger.unknown.keys() {
        if records.contains_key(key) {
            v.unknown_applied += 1;
        } else {
            v.unknown_not_applied += 1;
        }
    }
    v.accounts_ok = true;
    for (i, (&found, &want)) in balances.iter().zip(&expected).enumerate() {
        if i128::from(found) != want {
            v.accounts_ok = false;
            push(
                &mut v,
                format!("account {i} holds {found}, the applied records say {want}"),
            );
        }
    }
    v
}

/// What one auditor saw over time.
#[derive(Clone, Debug, Default)]
pub struct Monotonic {
    last: Option<([u8; 10], Vec<u64>)>,
    /// Reads observed.
    pub reads: u64,
    /// Reads whose highest versionstamp was above the previous read's.
    pub advanced: u64,
    /// Reads that went backwards (or saw other balances at the same versionstamp).
    pub violations: u64,
    /// Descriptions of the first violations.
    pub details: Vec<String>,
}

impl Monotonic {
    /// Records one read: the highest versionstamp among the accounts, and their balances.
    pub fn observe(&mut self, server: &str, max_versionstamp: [u8; 10], balances: Vec<u64>) {
        self.reads += 1;
        let problem = match &self.last {
            None => None,
            Some((prev, _)) if max_versionstamp > *prev => {
                self.advanced += 1;
                None
            }
            Some((prev, _)) if max_versionstamp < *prev => Some(format!(
                "read via {server} saw versionstamp {} after {}",
                hex(&max_versionstamp),
                hex(prev)
            )),
            Some((_, prev_bal)) if *prev_bal != balances => Some(format!(
                "read via {server} saw other balances at the same versionstamp {}",
                hex(&max_versionstamp)
            )),
            Some(_) => None,
        };
        if let Some(p) = problem {
            self.violations += 1;
            if self.details.len() < 5 {
                self.details.push(p);
            }
            // Keep the highest state seen: later reads are held to it.
            if max_versionstamp < self.last.as_ref().map_or([0; 10], |l| l.0) {
                return;
            }
        }
        self.last = Some((max_versionstamp, balances));
    }
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(from: u64, to: u64, amount: u64) -> Transfer {
        Transfer { from, to, amount }
    }

    /// Three accounts at 100; transfers a (acked), b (acked), c (unknown, applied),
    /// d (unknown, not applied).
    fn consistent() -> (Vec<u64>, BTreeMap<Vec<u8>, Vec<u8>>, Ledger) {
        let mut ledger = Ledger::default();
        ledger.acked.insert(b"a".to_vec(), t(0, 1, 10));
        ledger.acked.insert(b"b".to_vec(), t(1, 2, 5));
        ledger.unknown.insert(b"c".to_vec(), t(2, 0, 7));
        ledger.unknown.insert(b"d".to_vec(), t(0, 2, 50));
        let mut records = BTreeMap::new();
        for k in [&b"a"[..], b"b", b"c"] {
            let tr = ledger.acked.get(k).or(ledger.unknown.get(k)).unwrap();
            records.insert(k.to_vec(), tr.encode());
        }
        // 0: 100-10+7 = 97; 1: 100+10-5 = 105; 2: 100+5-7 = 98.
        (vec![97, 105, 98], records, ledger)
    }

    #[test]
    fn a_consistent_state_passes_and_is_counted() {
        let (balances, records, ledger) = consistent();
        let v = verify(100, &balances, &records, &ledger);
        assert!(v.passed(), "{v:?}");
        assert_eq!(
            (
                v.acknowledged,
                v.unknown,
                v.unknown_applied,
                v.unknown_not_applied,
                v.applied
            ),
            (2, 2, 1, 1, 3)
        );
        assert!(v.balance_ok && v.accounts_ok);
    }

    #[test]
    fn tampered_states_fail() {
        // A lost acknowledged transfer (record and balances rolled back).
        let (_, mut records, ledger) = consistent();
        records.remove(&b"a"[..]);
        let v = verify(100, &[107, 95, 98], &records, &ledger);
        assert!(!v.passed() && v.balance_ok, "{v:?}");

        // A transfer applied twice (its record is one key, the balances moved twice).
        let (_, records, ledger) = consistent();
        let v = verify(100, &[87, 115, 98], &records, &ledger);
        assert!(!v.passed() && v.balance_ok && !v.accounts_ok, "{v:?}");

        // Money created.
        let (mut balances, records, ledger) = consistent();
        balances[2] += 1;
        let v = verify(100, &balances, &records, &ledger);
        assert!(!v.passed() && !v.balance_ok, "{v:?}");

        // A record nobody wrote (balances consistent with it).
        let (_, mut records, ledger) = consistent();
        records.insert(b"z".to_vec(), t(1, 0, 1).encode());
        let v = verify(100, &[98, 104, 98], &records, &ledger);
        assert!(!v.passed() && v.accounts_ok, "{v:?}");

        // A record whose content differs from what the client wrote.
        let (_, mut records, ledger) = consistent();
        records.insert(b"a".to_vec(), t(0, 1, 11).encode());
        let v = verify(100, &[96, 106, 98], &records, &ledger);
        assert!(!v.passed() && v.accounts_ok, "{v:?}");

        // A garbled record.
        let (balances, mut records, ledger) = consistent();
        records.insert(b"b".to_vec(), vec![1, 2, 3]);
        assert!(!verify(100, &balances, &records, &ledger).passed());
    }

    #[test]
    fn the_auditor_catches_time_going_backwards() {
        let vs = |n: u8| {
            let mut v = [0u8; 10];
            v[7] = n;
            v
        };
        let mut m = Monotonic::default();
        m.observe("s1", vs(1), vec![1, 2]);
        m.observe("s2", vs(1), vec![1, 2]);
        m.observe("s3", vs(3), vec![2, 1]);
        assert_eq!((m.reads, m.advanced, m.violations), (3, 1, 0));
        m.observe("s1", vs(2), vec![1, 2]);
        assert_eq!(m.violations, 1, "{m:?}");
        // Still held to the highest state seen.
        m.observe("s2", vs(3), vec![9, 9]);
        assert_eq!(m.violations, 2, "{m:?}");
        m.observe("s2", vs(4), vec![3, 0]);
        assert_eq!((m.advanced, m.violations), (2, 2));
    }
}
