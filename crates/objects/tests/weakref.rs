//! Weak references: CPython's error for the built-in types, the reused callback-less
//! reference, callbacks newest first after every reference is cleared, the seed text's fix
//! (`a2.child = ref(a1)`), and weak references to garbage in a collection.

use std::cell::RefCell;
use std::rc::Rc;

use pymalloc_objects::{Class, Dict, Int, List, Str, WeakRef, gc, getweakrefcount, id};

#[test]
fn builtin_types_cannot_be_referred_to_weakly() {
    for (o, name) in [
        (List::new().into_obj(), "list"),
        (Dict::new().into_obj(), "dict"),
        (Int::new(1).into_obj(), "int"),
        (Str::new("s").into_obj(), "str"),
    ] {
        assert_eq!(
            WeakRef::new(&o).err().unwrap().to_string(),
            format!("TypeError: cannot create weak reference to '{name}' object")
        );
    }
}

#[test]
fn a_callbackless_reference_is_reused() {
    let a = Class::new("A").instantiate();
    let r1 = WeakRef::new(&a).unwrap();
    let r2 = WeakRef::new(&a).unwrap();
    assert_eq!(id(&r1), id(&r2));
    let r3 = WeakRef::with_callback(&a, |_| {}).unwrap();
    assert_ne!(id(&r1), id(&r3));
    assert_eq!(getweakrefcount(&a), 2);
    assert!(r1.upgrade().unwrap().is(&a));
    drop(a);
    assert!(r1.upgrade().is_none() && r3.is_dead());
}

#[test]
fn callbacks_run_newest_first_after_every_reference_is_cleared() {
    let a = Class::new("A").instantiate();
    let log = Rc::new(RefCell::new(Vec::new()));
    let plain = WeakRef::new(&a).unwrap();
    let mut refs = Vec::new();
    for i in 0..3 {
        let (log, plain) = (log.clone(), plain.clone());
        refs.push(
            WeakRef::with_callback(&a, move |r| {
                // Every reference is already dead when any callback runs.
                assert!(r.is_dead() && plain.is_dead());
                log.borrow_mut().push(i);
            })
            .unwrap(),
        );
    }
    drop(a);
    assert_eq!(*log.borrow(), vec![2, 1, 0]);
    // A reference that died before its referent gets no callback.
    let b = Class::new("B").instantiate();
    let fired = Rc::new(RefCell::new(false));
    let f = fired.clone();
    drop(WeakRef::with_callback(&b, move |_| *f.borrow_mut() = true).unwrap());
    drop(b);
    assert!(!*fired.borrow());
}

#[test]
fn a_weak_back_reference_breaks_the_cycle() {
    // a1.child = a2; a2.child = weakref.ref(a1): freed by reference counts alone.
    gc::disable();
    let class = Class::new("A");
    let fired = Rc::new(RefCell::new(0));
    for _ in 0..100 {
        let (a1, a2) = (class.instantiate(), class.instantiate());
        a1.setattr("child", a2.clone());
        let f = fired.clone();
        a2.setattr(
            "child",
            WeakRef::with_callback(&a1, move |_| *f.borrow_mut() += 1).unwrap(),
        );
    }
    assert_eq!(*fired.borrow(), 100);
    assert_eq!(gc::collect(2), 0);
    gc::enable();
}

#[test]
fn weak_references_to_garbage_in_a_collection() {
    gc::disable();
    let class = Class::new("A");
    let fired = Rc::new(RefCell::new(Vec::new()));
    // A cycle; one weak reference from outside (its callback runs), one held only by the
    // garbage itself (no callback: it is garbage too).
    let (a1, a2) = (class.instantiate(), class.instantiate());
    a1.setattr("child", a2.clone());
    a2.setattr("child", a1.clone());
    let f = fired.clone();
    let outside = WeakRef::with_callback(&a1, move |_| f.borrow_mut().push("outside")).unwrap();
    let f = fired.clone();
    let inside = WeakRef::with_callback(&a2, move |_| f.borrow_mut().push("inside")).unwrap();
    a1.setattr("w", inside);
    drop((a1, a2));
    assert!(fired.borrow().is_empty());
    assert_eq!(gc::collect(2), 4);
    assert_eq!(*fired.borrow(), vec!["outside"]);
    assert!(outside.upgrade().is_none());
    gc::enable();
}

#[test]
fn a_referent_waiting_to_be_freed_is_dead_to_upgrade() {
    // outer = [i, b]; b's callback upgrades a weak reference to i while i waits in the
    // deallocation queue (count zero): it must get None, not revive i.
    let class = Class::new("A");
    let i = class.instantiate();
    let wi = WeakRef::new(&i).unwrap();
    let b = class.instantiate();
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let _wb = WeakRef::with_callback(&b, move |_| *s.borrow_mut() = Some(wi.upgrade().is_some()))
        .unwrap();
    let outer = List::from_objs([i.into_obj(), b.into_obj()]);
    drop(outer);
    assert_eq!(*seen.borrow(), Some(false));
}

#[test]
fn a_callback_during_a_collection_cannot_reach_the_garbage() {
    gc::disable();
    let class = Class::new("A");
    let (a1, a2) = (class.instantiate(), class.instantiate());
    a1.setattr("child", a2.clone());
    a2.setattr("child", a1.clone());
    let lid = id(&a1);
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let _w = WeakRef::with_callback(&a1, move |_| {
        *s.borrow_mut() = Some(gc::get_objects(None).iter().any(|o| id(o) == lid));
    })
    .unwrap();
    drop((a1, a2));
    assert_eq!(gc::collect(2), 4);
    assert_eq!(*seen.borrow(), Some(false));
    gc::enable();
}

#[test]
fn saveall_still_clears_weak_references_and_runs_callbacks() {
    gc::disable();
    gc::set_debug(gc::DEBUG_SAVEALL);
    let class = Class::new("A");
    let a = class.instantiate();
    a.setattr("me", a.clone());
    let fired = Rc::new(RefCell::new(0));
    let f = fired.clone();
    let w = WeakRef::with_callback(&a, move |_| *f.borrow_mut() += 1).unwrap();
    drop(a);
    assert_eq!(gc::collect(2), 2);
    assert_eq!((*fired.borrow(), w.is_dead()), (1, true));
    gc::set_debug(0);
    for o in gc::garbage() {
        if let Some(i) = pymalloc_objects::Instance::cast(&o) {
            i.delattr("me").unwrap();
        }
    }
    gc::clear_garbage();
    gc::enable();
}

#[test]
fn a_weak_reference_held_only_by_garbage_never_fires() {
    // Its referent lives in an older generation and dies while the garbage is cleared; the
    // reference is garbage itself, so no callback, whatever the order of the attributes.
    for x_first in [true, false] {
        gc::disable();
        let class = Class::new("A");
        let x = class.instantiate();
        gc::collect(0); // x moves to generation 1
        let fired = Rc::new(RefCell::new(0));
        let f = fired.clone();
        let w = WeakRef::with_callback(&x, move |_| *f.borrow_mut() += 1).unwrap();
        let g = class.instantiate();
        g.setattr("me", g.clone());
        if x_first {
            g.setattr("x", x);
            g.setattr("w", w);
        } else {
            g.setattr("w", w);
            g.setattr("x", x);
        }
        drop(g);
        assert_eq!(gc::collect(0), 2);
        assert_eq!(*fired.borrow(), 0, "x first: {x_first}");
        gc::enable();
    }
}

#[test]
fn weak_value_dict_entries_go_with_their_values() {
    use pymalloc_objects::WeakValueDict;
    let a = Class::new("A");
    let d = WeakValueDict::new();
    let (x, y) = (a.instantiate(), a.instantiate());
    d.insert(Str::new("x"), &x).unwrap();
    d.insert(Int::new(7), &y).unwrap();
    assert_eq!(d.len(), 2);
    assert!(d.get(&Str::new("x").into_obj()).unwrap().unwrap().is(&x));
    // By counts: the entry goes as the value dies.
    drop(x);
    assert_eq!(d.len(), 1);
    assert!(d.get(&Str::new("x").into_obj()).unwrap().is_none());
    // By the collector: a value in a cycle.
    gc::disable();
    y.setattr("me", y.clone());
    drop(y);
    assert_eq!(d.len(), 1, "the cycle keeps it alive");
    // The instance, its dict, and the entry's weak reference, which its callback freed
    // (CPython 3.11 counts it too).
    assert_eq!(gc::collect(2), 3);
    assert!(d.is_empty());
    assert!(d.items().is_empty());
    gc::enable();
}

#[test]
fn weak_value_dict_keeps_a_newer_entry_and_refuses_what_cannot_be_weak() {
    use pymalloc_objects::WeakValueDict;
    let a = Class::new("A");
    let d = WeakValueDict::new();
    let key = Str::new("k").into_obj();
    let (old, new) = (a.instantiate(), a.instantiate());
    d.insert(key.clone(), &old).unwrap();
    d.insert(key.clone(), &new).unwrap();
    drop(old);
    assert!(
        d.get(&key).unwrap().unwrap().is(&new),
        "the newer entry stays"
    );
    assert!(d.remove(&key).unwrap().unwrap().is(&new));
    assert!(d.remove(&key).unwrap().is_none());
    assert_eq!(
        d.insert(key.clone(), &List::new()).unwrap_err().to_string(),
        "TypeError: cannot create weak reference to 'list' object"
    );
    assert_eq!(
        d.insert(List::new(), &new).unwrap_err().to_string(),
        "TypeError: unhashable type: 'list'"
    );
    // The mapping may go before its values.
    d.insert(key, &new).unwrap();
    drop(d);
    drop(new);
}
