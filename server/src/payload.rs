//! `by_event_payload`: predicates on fields of an event's JSON data, all of which must hold.
//! A non-JSON event, or one whose data does not parse, matches no predicate list but the
//! empty one.

use std::cmp::Ordering;

use quiver_net::message::Predicate;
use serde_json::Value;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A predicate ready to evaluate.
#[derive(Debug, Clone)]
pub struct Compiled {
    path: Vec<String>,
    op: Op,
    value: Value,
}

/// Checks and compiles the wire predicates: a bad operator or a value that is not JSON is
/// refused with a message for the client.
pub fn compile(preds: &[Predicate]) -> Result<Vec<Compiled>, String> {
    preds
        .iter()
        .map(|p| {
            let op = match p.op {
                0 => Op::Eq,
                1 => Op::Ne,
                2 => Op::Lt,
                3 => Op::Le,
                4 => Op::Gt,
                5 => Op::Ge,
                o => return Err(format!("predicate operator {o}")),
            };
            let value = serde_json::from_str(p.value.as_str())
                .map_err(|e| format!("predicate value {:?} is not JSON: {e}", p.value.as_str()))?;
            let path = p.path.as_str().split('.').map(str::to_string).collect();
            Ok(Compiled { path, op, value })
        })
        .collect()
}

fn field<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for key in path {
        v = match v {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

impl Compiled {
    fn holds(&self, data: &Value) -> bool {
        let Some(v) = field(data, &self.path) else {
            return self.op == Op::Ne;
        };
        let ord = order(v, &self.value);
        match self.op {
            Op::Eq => ord == Some(Ordering::Equal) || v == &self.value,
            Op::Ne => !(ord == Some(Ordering::Equal) || v == &self.value),
            Op::Lt => ord == Some(Ordering::Less),
            Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => ord == Some(Ordering::Greater),
            Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        }
    }
}

/// Whether an event passes every predicate.
pub fn matches(preds: &[Compiled], json: bool, data: &[u8]) -> bool {
    if preds.is_empty() {
        return true;
    }
    if !json {
        return false;
    }
    match serde_json::from_slice::<Value>(data) {
        Ok(v) => preds.iter().all(|p| p.holds(&v)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_net::Text;

    fn p(path: &str, op: u8, value: &str) -> Predicate {
        Predicate {
            path: Text::from(path),
            op,
            value: Text::from(value),
        }
    }

    #[test]
    fn predicates_compare_fields() {
        let data = br#"{"amount": 120, "currency": "EUR", "lines": [{"sku": "a"}], "vip": true}"#;
        let yes = |ps: &[Predicate]| matches(&compile(ps).unwrap(), true, data);
        assert!(yes(&[p("amount", 4, "100"), p("currency", 0, "\"EUR\"")]));
        assert!(yes(&[
            p("amount", 5, "120.0"),
            p("lines.0.sku", 0, "\"a\"")
        ]));
        assert!(yes(&[p("vip", 0, "true"), p("missing", 1, "1")]));
        assert!(!yes(&[p("amount", 2, "100")]));
        assert!(
            !yes(&[p("currency", 4, "5")]),
            "a string is not greater than a number"
        );
        assert!(!yes(&[p("missing", 0, "1")]));
        assert!(
            !matches(&compile(&[p("amount", 4, "1")]).unwrap(), false, data),
            "binary"
        );
        assert!(!matches(
            &compile(&[p("amount", 4, "1")]).unwrap(),
            true,
            b"not json"
        ));
        assert!(matches(&[], false, b"anything"));
    }

    #[test]
    fn bad_predicates_are_refused() {
        assert!(compile(&[p("a", 9, "1")]).is_err());
        assert!(compile(&[p("a", 0, "not json")]).is_err());
    }
}
