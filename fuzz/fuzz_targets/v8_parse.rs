//! Any bytes: the V8 parser (the one `sum`/`min`/`max` use) never panics; every parsed value
//! survives a serialize/parse round trip; numbers and bigints parse as the same `sum` operand
//! and their canonical `sum` encodings (`serialize_number`, `serialize_bigint`) parse back to
//! the same value.
#![no_main]

use kv_traits::v8::{parse, parse_sum_operand, serialize, SumOperand, V8Value};
use libfuzzer_sys::fuzz_target;

fn same(a: &V8Value, b: &V8Value) -> bool {
    match (a, b) {
        (V8Value::Number(a), V8Value::Number(b)) => a.to_bits() == b.to_bits(),
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let operand = parse_sum_operand(data);
    let Ok(value) = parse(data) else {
        assert!(operand.is_err(), "sum operand parsed from unparsable bytes");
        return;
    };
    let again = parse(&serialize(&value)).expect("serialized value parses");
    assert!(same(&value, &again), "{value:?} became {again:?}");
    match (&value, operand) {
        (V8Value::Number(_) | V8Value::BigInt(_), Ok(op)) => {
            let round = parse_sum_operand(&op.serialize()).expect("sum result parses");
            match (&op, &round) {
                (SumOperand::Number(a), SumOperand::Number(b)) => {
                    assert_eq!(a.to_bits(), b.to_bits())
                }
                _ => assert_eq!(op, round),
            }
            assert!(same(&value, &V8Value::from(op)));
        }
        (V8Value::Number(_) | V8Value::BigInt(_), Err(e)) => {
            panic!("numeric value {value:?} is not a sum operand: {e}")
        }
        (_, Ok(op)) => panic!("non-numeric {value:?} parsed as sum operand {op:?}"),
        (_, Err(_)) => {}
    }
});
