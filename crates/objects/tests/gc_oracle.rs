//! The collector against a reachability oracle, with everything it must get right at once:
//! random graphs of lists, dicts and instances (some with finalizers), weak references with
//! callbacks held inside the graph and outside it. After dropping all but the roots and
//! collecting: every unreachable instance is dead and every reachable one alive; each
//! finalizer ran once for an unreachable instance and never for a reachable one; each
//! callback ran at most once, exactly once for an outside reference to an unreachable
//! instance, never for one to a reachable instance; and once the roots go too, pymalloc's
//! blocks in use are back at the baseline. One test in this binary, so no other thread
//! allocates beside it. Also run under Miri, with a few small graphs.

use std::cell::RefCell;
use std::rc::Rc;

use proptest::prelude::*;
use pymalloc_objects::{
    Class, Dict, Instance, Int, List, Obj, WeakRef, allocator, clear_free_lists, gc,
};

fn in_use() -> usize {
    clear_free_lists();
    let s = allocator().stats();
    s.blocks_in_use() + s.large_blocks
}

/// Nodes (0 list, 1 dict, 2 instance, 3 instance with a finalizer), edges u -> v (v stored
/// in u), roots, and weak references (holder or outside, target, with a callback or not).
type Graph = (
    Vec<u8>,
    Vec<(usize, usize)>,
    Vec<usize>,
    Vec<(Option<usize>, usize, bool)>,
);

fn graph() -> impl Strategy<Value = Graph> {
    let max = if cfg!(miri) { 6 } else { 30 };
    (2usize..max).prop_flat_map(|n| {
        (
            prop::collection::vec(0u8..4, n),
            prop::collection::vec((0..n, 0..n), 0..3 * n),
            prop::collection::vec(0..n, 0..3),
            prop::collection::vec((prop::option::of(0..n), 0..n, any::<bool>()), 0..n),
        )
    })
}

fn store(holder: &Obj, key: usize, value: Obj) {
    if let Some(l) = List::cast(holder) {
        l.append(value);
    } else if let Some(d) = Dict::cast(holder) {
        d.set(Int::new(key as i64), value).unwrap();
    } else {
        Instance::cast(holder)
            .unwrap()
            .setattr(&format!("e{key}"), value);
    }
}

fn check((kinds, edges, roots, weaks): Graph) -> Result<(), TestCaseError> {
    gc::disable();
    // What stays for good: the interned attribute names and the cached small ints.
    for k in (0..edges.len()).chain(1000..1000 + weaks.len()) {
        drop(pymalloc_objects::Str::intern(&format!("e{k}")));
    }
    drop(pymalloc_objects::Str::intern("i"));
    for i in 0..edges.len().max(kinds.len()) {
        drop(Int::new(i as i64));
    }
    gc::collect(2);
    let baseline = in_use();
    let finalized: Rc<RefCell<Vec<usize>>> = Rc::default();
    let fired: Rc<RefCell<Vec<usize>>> = Rc::new(RefCell::new(vec![0; weaks.len()]));
    {
        let plain = Class::new("Node");
        let f = finalized.clone();
        let with_del = Class::with_finalizer("Final", move |me: &Instance| {
            let i = me.getattr("i").unwrap().repr().unwrap().parse().unwrap();
            f.borrow_mut().push(i);
        });
        let nodes: Vec<Obj> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| match k {
                0 => List::new().into_obj(),
                1 => Dict::new().into_obj(),
                _ => {
                    let x = if *k == 2 { &plain } else { &with_del }.instantiate();
                    x.setattr("i", Int::new(i as i64));
                    x.into_obj()
                }
            })
            .collect();
        let is_instance = |u: usize| kinds[u] >= 2;
        for (k, &(u, v)) in edges.iter().enumerate() {
            store(&nodes[u], k, nodes[v].clone());
        }
        // Probes: callback-less weak references to every instance, held outside.
        let probes: Vec<Option<WeakRef>> = (0..nodes.len())
            .map(|u| is_instance(u).then(|| WeakRef::new(&nodes[u]).unwrap()))
            .collect();
        let mut outside: Vec<WeakRef> = Vec::new();
        let mut outside_idx: Vec<usize> = Vec::new();
        for (w, &(holder, target, cb)) in weaks.iter().enumerate() {
            if !is_instance(target) {
                prop_assert!(WeakRef::new(&nodes[target]).is_err());
                continue;
            }
            let r = if cb {
                let fired = fired.clone();
                WeakRef::with_callback(&nodes[target], move |_| fired.borrow_mut()[w] += 1)
            } else {
                WeakRef::new(&nodes[target])
            }
            .unwrap();
            match holder {
                Some(h) => store(&nodes[h], 1000 + w, r.into_obj()),
                None => {
                    outside.push(r);
                    outside_idx.push(w);
                }
            }
        }
        // The oracle.
        let mut reach = vec![false; nodes.len()];
        let mut work: Vec<usize> = roots.clone();
        while let Some(u) = work.pop() {
            if !std::mem::replace(&mut reach[u], true) {
                work.extend(edges.iter().filter(|e| e.0 == u).map(|e| e.1));
            }
        }
        let kept: Vec<Obj> = roots.iter().map(|&r| nodes[r].clone()).collect();
        drop(nodes);
        gc::collect(2);
        for (u, p) in probes.iter().enumerate() {
            if let Some(p) = p {
                prop_assert_eq!(p.is_dead(), !reach[u], "node {}", u);
            }
        }
        let mut fin = finalized.borrow().clone();
        fin.sort_unstable();
        let expect_fin: Vec<usize> = (0..kinds.len())
            .filter(|&u| kinds[u] == 3 && !reach[u])
            .collect();
        prop_assert_eq!(fin, expect_fin, "finalized once each, the unreachable only");
        let f = fired.borrow().clone();
        prop_assert!(f.iter().all(|&n| n <= 1), "a callback ran twice: {:?}", f);
        for (w, &(holder, target, cb)) in weaks.iter().enumerate() {
            if !is_instance(target) {
                continue;
            }
            if reach[target] {
                prop_assert_eq!(f[w], 0, "a callback for a live referent");
            } else if holder.is_none() && cb {
                prop_assert_eq!(f[w], 1, "an outside reference's callback did not run");
            }
        }
        drop(outside);
        drop(outside_idx);
        drop(probes);
        drop(kept);
        gc::collect(2);
    }
    prop_assert_eq!(in_use(), baseline, "blocks in use back at the baseline");
    gc::enable();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 300 },
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_collector_agrees_with_the_oracle(g in graph()) {
        check(g)?;
    }
}
