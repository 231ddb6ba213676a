//! json: serde_json printing and parsing a generated document of tens of MB. Threads each
//! process their own share of the document.

use serde_json::{Value, json};

use super::{Params, fnv1a, parallel};
use crate::Rng;
use crate::measure::{Outcome, Probe};

fn record(rng: &mut Rng, i: usize) -> Value {
    let tags: Vec<String> = (0..rng.below(6))
        .map(|k| format!("tag{}", (i + k) % 97))
        .collect();
    let points: Vec<Value> = (0..rng.below(8))
        .map(|k| json!({"x": k as i64 - 3, "y": (rng.below(1000) as f64) / 8.0, "label": format!("p{k}")}))
        .collect();
    json!({
        "id": i,
        "name": format!("record number {i} of the generated document"),
        "active": i.is_multiple_of(3),
        "score": (i as f64) * 0.25,
        "tags": tags,
        "points": points,
        "owner": {"first": format!("first{}", i % 1000), "last": "Example", "age": i % 90},
    })
}

pub(crate) fn run(p: &Params, probe: &mut Probe) -> Outcome {
    let records = p.scaled(120_000, 20);
    let per_thread = records.div_ceil(p.threads);
    let results = parallel(p.threads, |t| {
        let mut rng = Rng::new(t as u64 + 5);
        let lo = t * per_thread;
        let hi = records.min(lo + per_thread);
        let doc = Value::Array((lo..hi).map(|i| record(&mut rng, i)).collect());
        let text = serde_json::to_string(&doc).expect("print");
        let parsed: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(parsed, doc, "round trip changed the document");
        let again = serde_json::to_string_pretty(&parsed).expect("print");
        drop(doc);
        (
            fnv1a(text.as_bytes()) ^ fnv1a(again.as_bytes()),
            text.len() as u64,
            (text, parsed),
        )
    });
    let bytes: u64 = results.iter().map(|r| r.1).sum();
    probe.live(Some(bytes));
    let checksum = results.iter().fold(bytes, |acc, r| acc.wrapping_add(r.0));
    drop(results);
    Outcome {
        ops: records as u64,
        checksum,
    }
}
