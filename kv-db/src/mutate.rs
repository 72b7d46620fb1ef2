//! The read-modify-write mutations (SUM, MIN, MAX) as pure functions of the stored value and
//! the operands, so every engine computes them identically.

use kv_traits::v8::{self, V8Value};
use kv_traits::{KvError, KvValue};
use num_bigint::BigInt;
use num_traits::{ToPrimitive, Zero};

/// The numeric kinds a V8-regime sum works on.
#[derive(Clone, Debug, PartialEq)]
enum Num {
    BigInt(BigInt),
    Number(f64),
    U64(u64),
}

impl Num {
    fn kind(&self) -> &'static str {
        match self {
            Num::BigInt(_) => "BigInt",
            Num::Number(_) => "Number",
            Num::U64(_) => "KvU64",
        }
    }
}

fn err(msg: impl Into<String>) -> KvError {
    KvError::Mutation(msg.into())
}

const UNSUPPORTED_STORED: &str =
    "Invalid sum operand: unsupported value type (the stored value is not a number, bigint or KvU64)";
const INVALID_V8: &str = "Some of the parameters are not valid V8 values";

fn parse_operand(bytes: &[u8]) -> Result<Num, KvError> {
    match v8::parse(bytes) {
        Ok(V8Value::BigInt(b)) => Ok(Num::BigInt(b)),
        Ok(V8Value::Number(n)) => Ok(Num::Number(n)),
        _ => Err(err(INVALID_V8)),
    }
}

fn parse_bound(bytes: &Option<Vec<u8>>) -> Result<Option<Num>, KvError> {
    match bytes {
        Some(b) if !b.is_empty() => parse_operand(b).map(Some),
        _ => Ok(None),
    }
}

fn to_value(n: Num) -> KvValue {
    match n {
        Num::BigInt(b) => KvValue::V8(v8::serialize_bigint(&b)),
        Num::Number(f) => KvValue::V8(v8::serialize_number(f)),
        Num::U64(u) => KvValue::U64(u),
    }
}

/// Applies `sum` to the current value (`None` = absent or expired).
pub fn sum(
    current: Option<&KvValue>,
    operand: &KvValue,
    min: &Option<Vec<u8>>,
    max: &Option<Vec<u8>>,
    clamp: bool,
) -> Result<KvValue, KvError> {
    // Regime (a): a KvU64 operand wraps modulo 2^64; bounds are ignored.
    if let KvValue::U64(add) = operand {
        return match current {
            None => Ok(KvValue::U64(*add)),
            Some(KvValue::U64(old)) => Ok(KvValue::U64(old.wrapping_add(*add))),
            Some(_) => Err(err(
                "Failed to perform 'sum' mutation on a non-U64 value in the database",
            )),
        };
    }
    // Regime (b): V8 Number / BigInt.
    let KvValue::V8(op_bytes) = operand else {
        return Err(err(INVALID_V8));
    };
    let op = parse_operand(op_bytes)?;
    let min = parse_bound(min)?;
    let max = parse_bound(max)?;
    for bound in [&min, &max].into_iter().flatten() {
        if std::mem::discriminant(bound) != std::mem::discriminant(&op) {
            return Err(err(
                "Min/max parameters have different types than the operand",
            ));
        }
    }
    let Some(current) = current else {
        return Ok(to_value(op));
    };
    let cur = match current {
        KvValue::U64(u) => Num::U64(*u),
        KvValue::V8(b) => match v8::parse(b) {
            Ok(V8Value::BigInt(b)) => Num::BigInt(b),
            Ok(V8Value::Number(n)) => Num::Number(n),
            _ => return Err(err(UNSUPPORTED_STORED)),
        },
        KvValue::Bytes(_) => return Err(err(UNSUPPORTED_STORED)),
    };
    let no_bounds = min.is_none() && max.is_none();
    match (cur, op) {
        (Num::U64(old), Num::BigInt(add))
            if no_bounds && !clamp && !add.sign().eq(&num_bigint::Sign::Minus) =>
        {
            match add.to_u64() {
                Some(add) => Ok(KvValue::U64(old.wrapping_add(add))),
                None => Err(err("Cannot sum KvU64 with BigInt")),
            }
        }
        (Num::BigInt(old), Num::BigInt(add)) => {
            let mut result = old + add;
            if let Some(Num::BigInt(lo)) = &min {
                if &result < lo {
                    if !clamp {
                        return Err(range_err());
                    }
                    result = lo.clone();
                }
            }
            if let Some(Num::BigInt(hi)) = &max {
                if &result > hi {
                    if !clamp {
                        return Err(range_err());
                    }
                    result = hi.clone();
                }
            }
            if result.is_zero() {
                result = BigInt::zero();
            }
            Ok(to_value(Num::BigInt(result)))
        }
        (Num::Number(old), Num::Number(add)) => {
            let mut result = old + add;
            if let Some(Num::Number(lo)) = &min {
                if result < *lo {
                    if !clamp {
                        return Err(range_err());
                    }
                    result = *lo;
                }
            }
            if let Some(Num::Number(hi)) = &max {
                if result > *hi {
                    if !clamp {
                        return Err(range_err());
                    }
                    result = *hi;
                }
            }
            Ok(to_value(Num::Number(result)))
        }
        (cur, op) => Err(err(format!("Cannot sum {} with {}", cur.kind(), op.kind()))),
    }
}

fn range_err() -> KvError {
    err("The result of a Sum operation would exceed its range limit")
}

/// Applies `min` (`is_max = false`) or `max` to the current value.
pub fn min_max(
    current: Option<&KvValue>,
    operand: &KvValue,
    is_max: bool,
) -> Result<KvValue, KvError> {
    let name = if is_max { "max" } else { "min" };
    let KvValue::U64(op) = operand else {
        return Err(err(format!(
            "Failed to perform '{name}' mutation on a non-U64 operand"
        )));
    };
    match current {
        None => Ok(KvValue::U64(*op)),
        Some(KvValue::U64(old)) => Ok(KvValue::U64(if is_max {
            (*old).max(*op)
        } else {
            (*old).min(*op)
        })),
        Some(_) => Err(err(format!(
            "Failed to perform '{name}' mutation on a non-U64 value in the database"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_sum_wraps_and_rejects_other_types() {
        assert_eq!(
            sum(
                Some(&KvValue::U64(u64::MAX)),
                &KvValue::U64(2),
                &None,
                &None,
                false
            ),
            Ok(KvValue::U64(1))
        );
        assert_eq!(
            sum(None, &KvValue::U64(5), &None, &None, false),
            Ok(KvValue::U64(5))
        );
        assert!(sum(
            Some(&KvValue::Bytes(vec![1])),
            &KvValue::U64(2),
            &None,
            &None,
            false
        )
        .is_err());
        assert!(sum(None, &KvValue::Bytes(vec![1]), &None, &None, false).is_err());
    }

    #[test]
    fn min_max_u64_only() {
        assert_eq!(
            min_max(Some(&KvValue::U64(3)), &KvValue::U64(5), true),
            Ok(KvValue::U64(5))
        );
        assert_eq!(
            min_max(Some(&KvValue::U64(3)), &KvValue::U64(5), false),
            Ok(KvValue::U64(3))
        );
        assert_eq!(min_max(None, &KvValue::U64(5), false), Ok(KvValue::U64(5)));
        assert!(min_max(Some(&KvValue::V8(vec![])), &KvValue::U64(5), false).is_err());
        assert!(min_max(None, &KvValue::Bytes(vec![]), true).is_err());
    }

    fn big(n: i64) -> KvValue {
        KvValue::V8(v8::serialize_bigint(&BigInt::from(n)))
    }
    fn num(n: f64) -> KvValue {
        KvValue::V8(v8::serialize_number(n))
    }
    fn bound(n: i64) -> Option<Vec<u8>> {
        Some(v8::serialize_bigint(&BigInt::from(n)))
    }

    #[test]
    fn v8_sums() {
        assert_eq!(
            sum(Some(&big(5)), &big(-7), &None, &None, false),
            Ok(big(-2))
        );
        assert_eq!(
            sum(Some(&num(1.5)), &num(2.0), &None, &None, false),
            Ok(num(3.5))
        );
        // Absent key: the operand is stored as is, bounds not applied.
        assert_eq!(sum(None, &big(100), &None, &bound(10), false), Ok(big(100)));
        // Int32-encoded numbers are stored back as doubles.
        let int_two = KvValue::V8(vec![0xff, 0x10, 0x49, 0x04]);
        assert_eq!(sum(None, &int_two, &None, &None, false), Ok(num(2.0)));
        // Bounds: clamp or fail.
        assert_eq!(
            sum(Some(&big(8)), &big(5), &None, &bound(10), true),
            Ok(big(10))
        );
        assert_eq!(
            sum(Some(&big(-8)), &big(-5), &bound(-10), &None, true),
            Ok(big(-10))
        );
        let e = sum(Some(&big(8)), &big(5), &None, &bound(10), false).unwrap_err();
        assert!(e.to_string().contains("range limit"), "{e}");
        // Bound kind must match the operand kind.
        let e = sum(Some(&num(1.0)), &num(1.0), &bound(1), &None, false).unwrap_err();
        assert!(e.to_string().contains("different types"), "{e}");
        // Kind mismatch.
        let e = sum(Some(&num(1.0)), &big(1), &None, &None, false).unwrap_err();
        assert_eq!(e.to_string(), "Cannot sum Number with BigInt");
        // KvU64 + non-negative BigInt without bounds behaves as KvU64.
        assert_eq!(
            sum(Some(&KvValue::U64(u64::MAX)), &big(2), &None, &None, false),
            Ok(KvValue::U64(1))
        );
        assert!(sum(Some(&KvValue::U64(1)), &big(-1), &None, &None, false).is_err());
        let e = sum(Some(&KvValue::U64(1)), &big(1), &None, &bound(5), false).unwrap_err();
        assert_eq!(e.to_string(), "Cannot sum KvU64 with BigInt");
        // Not a number at all.
        let s = KvValue::V8(v8::serialize(&V8Value::String("x".into())));
        assert!(sum(None, &s, &None, &None, false).is_err());
        assert!(sum(Some(&s), &big(1), &None, &None, false).is_err());
    }
}
