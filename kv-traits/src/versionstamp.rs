//! Versionstamps: the 10-byte commit identifiers of Deno KV.

use std::fmt;
use std::str::FromStr;

/// A 10-byte versionstamp: 8 bytes big-endian commit version, then 2 bytes big-endian sequence.
///
/// Byte order equals commit order, and the 20-character lowercase hex text form sorts the same way.
///
/// ```
/// use kv_traits::Versionstamp;
/// let vs = Versionstamp::from_version(5);
/// assert_eq!(vs.to_string(), "00000000000000050000");
/// assert_eq!("00000000000000050000".parse::<Versionstamp>().unwrap(), vs);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Versionstamp(pub [u8; 10]);

impl Versionstamp {
    /// The all-zero versionstamp; never assigned to a real commit.
    pub const ZERO: Versionstamp = Versionstamp([0; 10]);

    /// A versionstamp for commit `version` with sequence 0.
    pub fn from_version(version: u64) -> Self {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&version.to_be_bytes());
        Versionstamp(b)
    }

    /// The commit version (bytes 0..8, big-endian).
    pub fn version(&self) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(v)
    }

    /// Builds a versionstamp from a byte slice that must be exactly 10 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 10]>::try_from(bytes).ok().map(Versionstamp)
    }

    /// The 10 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 10] {
        &self.0
    }
}

impl fmt::Display for Versionstamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Versionstamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Versionstamp({self})")
    }
}

/// Returned when text is not exactly 20 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid versionstamp {0:?}: expected 20 hex characters")]
pub struct InvalidVersionstamp(pub String);

impl FromStr for Versionstamp {
    type Err = InvalidVersionstamp;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 20 {
            return Err(InvalidVersionstamp(s.to_string()));
        }
        let mut b = [0u8; 10];
        hex::decode_to_slice(s, &mut b).map_err(|_| InvalidVersionstamp(s.to_string()))?;
        Ok(Versionstamp(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_order() {
        let a = Versionstamp::from_version(9);
        let b = Versionstamp::from_version(10);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(b.version(), 10);
        assert!("zz".parse::<Versionstamp>().is_err());
        assert!("0000000000000005000g".parse::<Versionstamp>().is_err());
        assert_eq!(
            "0100000002c0f4c10000".parse::<Versionstamp>().unwrap().0,
            [1, 0, 0, 0, 2, 0xc0, 0xf4, 0xc1, 0, 0]
        );
    }
}
