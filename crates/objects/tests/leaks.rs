//! After everything built is dropped (and the free lists cleared), pymalloc's blocks in use
//! return to where they were: every reference count reached zero and every block went back.
//! One test in this binary, so no other thread allocates objects beside it.

use std::cell::RefCell;

use pymalloc_objects::{Class, Dict, Int, List, Obj, Str, allocator, clear_free_lists, gc};

fn in_use() -> usize {
    clear_free_lists();
    let s = allocator().stats();
    s.blocks_in_use() + s.large_blocks
}

/// A tangle of every type: lists of dicts of lists, big ints, strings, shared references.
fn build(n: i64) -> List {
    let root = List::new();
    let shared = Str::new("shared between many containers");
    for i in 0..n {
        let d = Dict::new();
        d.set(Int::new(i), Int::from_i128(i128::from(i) << 90))
            .unwrap();
        d.set(Str::new(&format!("key{i}")), shared.clone()).unwrap();
        d.set(
            shared.clone(),
            List::from_objs((0..i % 7).map(|k| Int::new(k * 1000).into_obj())),
        )
        .unwrap();
        if i % 3 == 0 {
            d.remove(&Int::new(i).into_obj()).unwrap();
        }
        let inner = List::new();
        inner.append(d);
        inner.append(Int::new(i).mul(&Int::new(i)));
        root.append(inner);
        if i % 5 == 0 {
            root.pop().unwrap();
        }
    }
    root
}

#[test]
fn every_block_comes_back() {
    // Create the small ints (cached for good, as in CPython) and anything lazily made once,
    // then take the baseline.
    for i in -5..=256 {
        drop(Int::new(i));
    }
    drop(build(10));
    let base = in_use();
    for round in 0..3 {
        let r = build(2000);
        assert!(in_use() > base + 2000, "round {round}");
        let copy: Obj = r.clone().into();
        drop(r);
        drop(copy);
        assert_eq!(in_use(), base, "round {round}: blocks left behind");
    }
    // A dict grown large and cleared, a list grown and popped empty.
    let d = Dict::new();
    for i in 0..5000 {
        d.set(Int::new(i), Str::new("v")).unwrap();
    }
    d.clear();
    let l = List::new();
    for i in 0..5000 {
        l.append(Int::new(i));
    }
    while l.pop().is_ok() {}
    drop((d, l));
    assert_eq!(in_use(), base);
    allocator().check_invariants().unwrap();

    let base = cycles_go_back_after_a_collection(base);
    threads_give_back_their_runtime(base);
}

/// Cycles through instances, lists and dicts are freed by `gc::collect()`, down to the last
/// block. Returns the new baseline (the attribute name stays interned).
fn cycles_go_back_after_a_collection(base: usize) -> usize {
    gc::disable();
    let a = Class::new("A");
    // The attribute name, interned for the life of the thread: one block.
    a.instantiate().setattr("child", Int::new(0));
    assert_eq!(in_use(), base + 1);
    let base = base + 1;
    for i in 0..1000 {
        let (a1, a2) = (a.instantiate(), a.instantiate());
        a1.setattr("child", a2.clone());
        a2.setattr("child", a1.clone());
        let l = List::new();
        let d = Dict::new();
        d.set(Int::new(i), l.clone()).unwrap();
        l.append(d);
        l.append(a1);
    }
    assert!(in_use() > base + 4000);
    assert_eq!(gc::collect(2), 6000);
    assert_eq!(in_use(), base, "blocks left after collecting the cycles");
    gc::enable();
    base
}

/// Prints its list when dropped, and checks what it printed.
struct PrintOnDrop(Option<List>);

impl Drop for PrintOnDrop {
    fn drop(&mut self) {
        if let Some(l) = self.0.take() {
            // python3.11: l = [1]; l.append(l); repr(l) == '[1, [...]]'
            let r = l.repr().unwrap();
            if r != "[1, [...]]" {
                eprintln!("repr after the runtime is gone: {r}");
                std::process::abort();
            }
            l.clear();
        }
    }
}

thread_local! {
    static PRINTED: RefCell<PrintOnDrop> = const { RefCell::new(PrintOnDrop(None)) };
    /// Objects a thread keeps until its exit, in a thread-local whose destructor runs after the
    /// runtime's (it is registered first, and destructors run in reverse order).
    static KEPT: RefCell<Vec<Obj>> = const { RefCell::new(Vec::new()) };
}

/// Threads that exit give back what their runtime held (small ints, interned strings, free
/// lists), and objects dropped after their runtime is gone are freed too: iteratively (a
/// million nested lists) and printed with the cycle guard.
fn threads_give_back_their_runtime(base: usize) {
    for _ in 0..50 {
        std::thread::spawn(|| {
            for i in -5..=256 {
                drop(Int::new(i));
            }
            drop(Str::intern("a name"));
            drop(build(20));
        })
        .join()
        .unwrap();
    }
    assert_eq!(in_use(), base, "a thread's runtime left blocks behind");

    std::thread::spawn(|| {
        // Register these destructors before the runtime's.
        KEPT.with(|k| k.borrow_mut().clear());
        PRINTED.with(|p| p.borrow_mut().0 = None);
        let printed = List::from_objs([Int::new(1).into_obj()]);
        printed.append(printed.clone());
        PRINTED.with(|p| p.borrow_mut().0 = Some(printed));
        let mut l = List::new();
        for _ in 0..1_000_000 {
            let outer = List::new();
            outer.append(l);
            l = outer;
        }
        let cyclic = List::new();
        cyclic.append(cyclic.clone());
        KEPT.with(|k| k.borrow_mut().extend([l.into_obj(), cyclic.into_obj()]));
    })
    .join()
    .unwrap();
    // The cyclic list is a leak by design (no collector yet): two blocks, the list and its
    // item array.
    assert_eq!(in_use(), base + 2);
}
