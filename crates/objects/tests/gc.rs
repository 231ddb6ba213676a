//! The cycle collector: cycles through lists, dicts and instances are found and freed, exactly
//! the unreachable objects go (a reachability oracle over random graphs), reachable ones are
//! untouched, and the gc API (counts, thresholds, enable/disable, get_objects, referents,
//! referrers, freeze, DEBUG_SAVEALL). Each test runs on its own thread, so its own runtime.

use std::collections::HashSet;

use proptest::prelude::*;
use pymalloc_objects::{Class, Dict, Int, List, Obj, Str, gc, getsizeof, id};

fn tracked_ids() -> HashSet<usize> {
    gc::get_objects(None).iter().map(id).collect()
}

#[test]
fn a_cycle_of_two_instances_is_collected() {
    gc::disable();
    let a = Class::new("A");
    gc::collect(2);
    let before = tracked_ids();
    for _ in 0..100 {
        // def cycle_ref(): a1 = A(); a2 = A(); a1.child = a2; a2.child = a1
        let (a1, a2) = (a.instantiate(), a.instantiate());
        a1.setattr("child", a2.clone());
        a2.setattr("child", a1.clone());
    }
    // 100 cycles of 2 instances and their 2 attribute dicts are left, unreachable.
    assert_eq!(tracked_ids().len(), before.len() + 400);
    assert_eq!(gc::collect(2), 400);
    assert_eq!(tracked_ids(), before);
    assert_eq!(gc::collect(2), 0);
    gc::enable();
}

#[test]
fn instance_size_and_attributes() {
    let a = Class::new("A");
    let x = a.instantiate();
    assert_eq!(getsizeof(&x), 56); // CPython 3.11: 56
    x.setattr("n", Int::new(5));
    assert_eq!(x.getattr("n").unwrap().repr().unwrap(), "5");
    assert_eq!(
        x.getattr("m").unwrap_err().to_string(),
        "AttributeError: 'A' object has no attribute 'm'"
    );
    assert!(gc::is_tracked(&x));
    assert!(!gc::is_tracked(&Int::new(5)));
    assert!(gc::is_tracked(&List::new()));
    // CPython 3.11: a dict is tracked once it holds a container.
    let d = Dict::new();
    d.set(Int::new(1), Str::new("x")).unwrap();
    assert!(!gc::is_tracked(&d));
    d.set(Int::new(2), List::new()).unwrap();
    assert!(gc::is_tracked(&d));
}

#[test]
fn counts_thresholds_and_automatic_collection() {
    gc::collect(2);
    assert_eq!(gc::get_threshold(), (700, 10, 10));
    let (c0, _, _) = gc::get_count();
    let keep: Vec<List> = (0..10).map(|_| List::new()).collect();
    assert_eq!(gc::get_count().0, c0 + 10);
    drop(keep);
    assert_eq!(gc::get_count().0, c0);
    // Garbage cycles made with the collector on are collected without a call.
    gc::set_threshold(100, 10, 10);
    for _ in 0..10_000 {
        let l = List::new();
        l.append(l.clone());
    }
    let left = gc::get_objects(None).len();
    assert!(
        left < 1_000,
        "{left} tracked objects left: no automatic collection"
    );
    let stats = gc::get_stats();
    assert!(stats[0].0 > 0 && stats[0].1 > 0, "{stats:?}");
    gc::set_threshold(700, 10, 10);
}

#[test]
fn referents_referrers_and_freeze() {
    let l = List::new();
    let d = Dict::new();
    d.set(Str::new("k"), l.clone()).unwrap();
    let holder = List::from_objs([d.clone().into_obj()]);
    let refs: Vec<usize> = gc::get_referents(&d).iter().map(id).collect();
    assert!(refs.contains(&id(&l)));
    let referrers: Vec<usize> = gc::get_referrers(&d).iter().map(id).collect();
    assert_eq!(referrers, vec![id(&holder)]);
    gc::freeze();
    assert!(gc::get_freeze_count() >= 3);
    assert!(gc::get_objects(None).is_empty());
    gc::unfreeze();
    assert_eq!(gc::get_freeze_count(), 0);
    assert!(tracked_ids().contains(&id(&holder)));
}

#[test]
fn debug_saveall_keeps_the_garbage() {
    gc::collect(2);
    gc::set_debug(gc::DEBUG_SAVEALL);
    let l = List::new();
    l.append(l.clone());
    let lid = id(&l);
    drop(l);
    assert_eq!(gc::collect(2), 1);
    let g = gc::garbage();
    assert_eq!(g.iter().map(id).collect::<Vec<_>>(), vec![lid]);
    gc::set_debug(0);
    List::cast(&g[0]).unwrap().clear();
    drop(g);
    gc::clear_garbage();
    assert_eq!(gc::collect(2), 0);
}

#[test]
fn a_million_object_chain_in_a_cycle_is_collected_without_recursion() {
    gc::disable();
    let first = List::new();
    let mut last = first.clone();
    for _ in 0..1_000_000 {
        let next = List::new();
        last.append(next.clone());
        last = next;
    }
    last.append(first.clone());
    drop((first, last));
    assert_eq!(gc::collect(2), 1_000_001);
    gc::enable();
}

/// A random graph of containers: node kinds and edges; `roots` are the nodes kept.
fn graph() -> impl Strategy<Value = (Vec<u8>, Vec<(usize, usize)>, Vec<usize>)> {
    (2usize..40).prop_flat_map(|n| {
        (
            prop::collection::vec(0u8..3, n),
            prop::collection::vec((0..n, 0..n), 0..3 * n),
            prop::collection::vec(0..n, 0..4),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn exactly_the_unreachable_objects_are_collected((kinds, edges, roots) in graph()) {
        gc::disable();
        gc::collect(2);
        let before = tracked_ids();
        let class = Class::new("Node");
        // Each node: a list, a dict or an instance; an edge u -> v stores v in u.
        let nodes: Vec<Obj> = kinds
            .iter()
            .map(|k| match k {
                0 => List::new().into_obj(),
                1 => Dict::new().into_obj(),
                _ => class.instantiate().into_obj(),
            })
            .collect();
        let mut extra_tracked = vec![0usize; nodes.len()]; // attribute dicts per node
        for (k, &(u, v)) in edges.iter().enumerate() {
            let target = nodes[v].clone();
            if let Some(l) = List::cast(&nodes[u]) {
                l.append(target);
            } else if let Some(d) = Dict::cast(&nodes[u]) {
                d.set(Int::new(k as i64), target).unwrap();
            } else {
                let i = pymalloc_objects::Instance::cast(&nodes[u]).unwrap();
                if extra_tracked[u] == 0 {
                    extra_tracked[u] = 1;
                }
                i.setattr(&format!("e{k}"), target);
            }
        }
        // The oracle: reachable from the roots over the edges.
        let mut reach = vec![false; nodes.len()];
        let mut work: Vec<usize> = roots.clone();
        while let Some(u) = work.pop() {
            if !std::mem::replace(&mut reach[u], true) {
                work.extend(edges.iter().filter(|e| e.0 == u).map(|e| e.1));
            }
        }
        // A dict is tracked once it holds a container: every dict with an out-edge here.
        let counted = |u: usize| kinds[u] != 1 || edges.iter().any(|e| e.0 == u);
        let expect_collected: usize = (0..nodes.len())
            .filter(|&u| !reach[u])
            .map(|u| usize::from(counted(u)) + extra_tracked[u])
            .sum();
        let lens: Vec<(usize, String)> = roots.iter().map(|&r| (id(&nodes[r]), format!("{:?}", gc::get_referents(&nodes[r]).len()))).collect();
        let kept: Vec<Obj> = roots.iter().map(|&r| nodes[r].clone()).collect();
        let reach_ids: HashSet<usize> = (0..nodes.len()).filter(|&u| reach[u] && counted(u)).map(|u| id(&nodes[u])).collect();
        drop(nodes);
        // Unreachable acyclic parts were freed by their counts already; collect() finds the
        // cycles. Everything unreachable is gone after it, nothing reachable is.
        let n = gc::collect(2);
        prop_assert!(n <= expect_collected);
        let now = tracked_ids();
        for r in &reach_ids {
            prop_assert!(now.contains(r), "a reachable object was collected");
        }
        let extra: usize = now.difference(&before).filter(|i| !reach_ids.contains(i)).count();
        // What is left besides the reachable nodes: the reachable instances' attribute dicts.
        let reach_dicts: usize = (0..kinds.len()).filter(|&u| reach[u]).map(|u| extra_tracked[u]).sum();
        prop_assert_eq!(extra, reach_dicts);
        for (r, (rid, len)) in roots.iter().zip(&lens) {
            let _ = r;
            let o = kept.iter().find(|o| id(o) == *rid).unwrap();
            prop_assert_eq!(&format!("{:?}", gc::get_referents(o).len()), len);
        }
        drop(kept);
        gc::collect(2);
        prop_assert_eq!(tracked_ids(), before);
        gc::enable();
    }
}
