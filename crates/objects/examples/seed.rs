//! The seed text's four scenarios, here and in python3, side by side: reference counts and
//! sizes, the leak and the collector, the weak-reference fix, the gc module. Every row must
//! agree (the `seed_scenarios` test checks the same).
//!
//! Run: `cargo run --release -p pymalloc-objects --example seed`

#[path = "common/scenarios.rs"]
mod scenarios;

fn main() {
    let ours = scenarios::ours();
    let theirs = scenarios::python();
    let theirs = match &theirs {
        Ok(v) => v.as_slice(),
        Err(e) => {
            println!("({e}: showing this side only)");
            &[]
        }
    };
    let mut differ = 0;
    println!("| scenario step | here | python3 |  |");
    println!("|---|---|---|---|");
    for (i, (k, v)) in ours.iter().enumerate() {
        let py = theirs.get(i).filter(|(pk, _)| pk == k).map(|(_, pv)| pv);
        let mark = match py {
            Some(p) if p == v => "same",
            Some(_) => {
                differ += 1;
                "DIFFERS"
            }
            None => "–",
        };
        println!(
            "| {k} | {v} | {} | {mark} |",
            py.map_or("–", |s| s.as_str())
        );
    }
    if !theirs.is_empty() {
        if differ == 0 && theirs.len() == ours.len() {
            println!("\nall {} rows agree with python3", ours.len());
        } else {
            println!(
                "\n{differ} rows differ (python3 printed {} rows)",
                theirs.len()
            );
            std::process::exit(1);
        }
    }
}
