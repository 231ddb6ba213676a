//! The seed text's fourth scenario, the gc module: counts and thresholds, a manual collection
//! with `gc.callbacks` watching, a finalizer that resurrects its object, and what a
//! collection costs per object, side by side with python3 doing the same in the same run
//! (if it is on the PATH). Both sides take the time of an empty full collection off: python3's
//! covers the interpreter's own tens of thousands of tracked objects.
//!
//! Run: `cargo run --release -p pymalloc-objects --example gcmodule`

use std::cell::{Cell, RefCell};
use std::process::Command;
use std::rc::Rc;
use std::time::Instant;

use pymalloc_objects::{Class, Instance, List, Obj, gc};

/// Rounds of each measurement; the fastest counts (the machine is shared and noisy).
const ROUNDS: usize = 5;
/// Objects per measurement.
const N: usize = 200_000;

fn main() {
    println!("1. Counts and thresholds");
    gc::collect(2);
    println!("   gc.get_threshold() = {:?}", gc::get_threshold());
    let keep: Vec<List> = (0..5).map(|_| List::new()).collect();
    println!(
        "   after 5 new lists: gc.get_count() = {:?}",
        gc::get_count()
    );
    gc::collect(0);
    println!(
        "   after gc.collect(0): gc.get_count() = {:?} (generation 0 moved up one)",
        gc::get_count()
    );
    drop(keep);

    println!("\n2. A manual collection, with gc.callbacks");
    let id = gc::callbacks::append(|phase, info| {
        println!(
            "   callback: {} {{'generation': {}, 'collected': {}, 'uncollectable': {}}}",
            phase.as_str(),
            info.generation,
            info.collected,
            info.uncollectable
        )
    });
    gc::disable();
    for _ in 0..3 {
        let (a, b) = (List::new(), List::new());
        a.append(b.clone());
        b.append(a);
    }
    println!("   three 2-cycles of lists dropped; gc.collect() ...");
    println!("   = {}", gc::collect(2));
    if let Some(id) = id {
        gc::callbacks::remove(id);
    }

    println!("\n3. A finalizer (__del__) that resurrects its object");
    let keep: Rc<RefCell<Vec<Obj>>> = Rc::default();
    let calls = Rc::new(Cell::new(0));
    let (k, c) = (keep.clone(), calls.clone());
    let phoenix = Class::with_finalizer("Phoenix", move |me: &Instance| {
        c.set(c.get() + 1);
        k.borrow_mut().push(me.clone().into_obj());
    });
    {
        let p = phoenix.instantiate();
        p.setattr("me", p.clone());
    }
    println!(
        "   p.me = p; del p; gc.collect() = {} (resurrected: not counted), __del__ ran {} time",
        gc::collect(2),
        calls.get()
    );
    keep.borrow_mut().clear();
    println!(
        "   let go again: gc.collect() = {} (the instance and its attribute dict), __del__ ran {} time in all",
        gc::collect(2),
        calls.get()
    );
    gc::enable();

    println!(
        "\n4. The cost of a collection per object, fastest of {ROUNDS} rounds (python3 beside it)"
    );
    let (free_ns, live_ns) = ours();
    let theirs = python();
    println!(
        "   what                                          here ns/object   python3 ns/object   ratio"
    );
    for (what, here, py) in [
        (
            format!("freeing {N} garbage objects in 2-cycles"),
            free_ns,
            theirs.map(|t| t.0),
        ),
        (
            format!("a full collection over {N} live lists"),
            live_ns,
            theirs.map(|t| t.1),
        ),
    ] {
        let (p, r) = py.map_or(("–".into(), "–".into()), |p| {
            (format!("{p:.1}"), format!("{:.2}", here / p))
        });
        println!("   {what:<45} {here:>14.1} {p:>19} {r:>7}");
    }
}

/// (ns per garbage object freed, ns per live object in a full collection), fastest rounds,
/// with the time of an empty collection taken off, as for python3.
fn ours() -> (f64, f64) {
    let (mut empty, mut free, mut live) = (f64::MAX, f64::MAX, f64::MAX);
    gc::disable();
    gc::collect(2);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        gc::collect(2);
        empty = empty.min(t.elapsed().as_nanos() as f64);
    }
    for _ in 0..ROUNDS {
        for _ in 0..N / 2 {
            let (a, b) = (List::new(), List::new());
            a.append(b.clone());
            b.append(a);
        }
        let t = Instant::now();
        let found = gc::collect(2);
        free = free.min((t.elapsed().as_nanos() as f64 - empty) / found as f64);
        let keep: Vec<List> = (0..N).map(|_| List::new()).collect();
        gc::collect(2);
        let t = Instant::now();
        gc::collect(2);
        live = live.min((t.elapsed().as_nanos() as f64 - empty) / N as f64);
        drop(keep);
    }
    gc::enable();
    (free, live)
}

/// The same in python3, if it runs.
fn python() -> Option<(f64, f64)> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(include_str!("common/gc_cost.py"))
        .arg(N.to_string())
        .arg(ROUNDS.to_string())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text.lines().filter_map(|l| l.trim().parse::<f64>().ok());
    Some((v.next()?, v.next()?))
}
