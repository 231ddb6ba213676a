//! Finalizers (`__del__`, PEP 442) and `gc.callbacks`: a finalizer runs once, by counts or by
//! the collector; what it resurrects survives with everything it reaches; the collector counts
//! only what stays unreachable; the callbacks see every collection. Each test runs on its own
//! thread, so its own runtime.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pymalloc_objects::{Class, Instance, List, Obj, WeakRef, gc, id};

thread_local! {
    static KEEP: RefCell<Vec<Obj>> = const { RefCell::new(Vec::new()) };
}

/// A class whose finalizer counts its calls.
fn counting(name: &str) -> (Class, Rc<Cell<usize>>) {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    (
        Class::with_finalizer(name, move |_| c.set(c.get() + 1)),
        calls,
    )
}

#[test]
fn the_finalizer_runs_once_when_the_last_reference_goes() {
    let (a, calls) = counting("A");
    let x = a.instantiate();
    let y = x.clone();
    drop(x);
    assert_eq!(calls.get(), 0);
    drop(y);
    assert_eq!(calls.get(), 1);
    // A class without one runs nothing; instances of the class keep working.
    drop(Class::new("B").instantiate());
    let z = a.instantiate();
    z.setattr("v", List::new());
    drop(z);
    assert_eq!(calls.get(), 2);
}

#[test]
fn a_finalizer_sees_its_weak_references_alive_when_run_by_counts() {
    // CPython's subtype_dealloc calls the finalizer before it clears the weak references.
    let seen = Rc::new(RefCell::new(None::<WeakRef>));
    let alive = Rc::new(Cell::new(None));
    let (s, a2) = (seen.clone(), alive.clone());
    let a = Class::with_finalizer("A", move |_| {
        a2.set(s.borrow().as_ref().map(|w| !w.is_dead()));
    });
    let x = a.instantiate();
    *seen.borrow_mut() = Some(WeakRef::new(&x).unwrap());
    drop(x);
    assert_eq!(alive.get(), Some(true));
    assert!(seen.borrow().as_ref().unwrap().is_dead());
}

#[test]
fn resurrection_by_counts_keeps_the_instance_and_does_not_finalize_twice() {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let a = Class::with_finalizer("Phoenix", move |me: &Instance| {
        c.set(c.get() + 1);
        KEEP.with(|k| k.borrow_mut().push(me.clone().into_obj()));
    });
    let x = a.instantiate();
    x.setattr("payload", List::new());
    let addr = id(&x);
    drop(x);
    assert_eq!(calls.get(), 1);
    let back = KEEP.with(|k| k.borrow_mut().pop()).expect("resurrected");
    assert_eq!(id(&back), addr);
    let back = Instance::cast(&back).unwrap();
    assert_eq!(back.getattr("payload").unwrap().type_name(), "list");
    assert!(gc::is_tracked(back));
    // Its second death frees it: the finalizer does not run again.
    let w = WeakRef::new(back).unwrap();
    KEEP.with(|k| k.borrow_mut().clear());
    let _ = back;
    drop(back.clone());
    assert_eq!(calls.get(), 1);
    drop(w);
}

#[test]
fn the_collector_runs_each_finalizer_once_and_frees_the_cycle() {
    gc::disable();
    gc::collect(2);
    let (a, calls) = counting("A");
    {
        let (a1, a2) = (a.instantiate(), a.instantiate());
        a1.setattr("child", a2.clone());
        a2.setattr("child", a1.clone());
    }
    assert_eq!(calls.get(), 0);
    // Two instances and their attribute dicts.
    assert_eq!(gc::collect(2), 4);
    assert_eq!(calls.get(), 2);
    assert_eq!(gc::collect(2), 0);
    assert_eq!(calls.get(), 2);
    gc::enable();
}

#[test]
fn the_collector_clears_weak_references_before_finalizers_run() {
    // CPython's gc_collect_main: handle_weakrefs, then finalize_garbage.
    gc::disable();
    let seen = Rc::new(RefCell::new(None::<WeakRef>));
    let alive = Rc::new(Cell::new(None));
    let (s, a2) = (seen.clone(), alive.clone());
    let a = Class::with_finalizer("A", move |_| {
        a2.set(s.borrow().as_ref().map(|w| !w.is_dead()));
    });
    {
        let x = a.instantiate();
        x.setattr("me", x.clone());
        *seen.borrow_mut() = Some(WeakRef::new(&x).unwrap());
    }
    assert_eq!(gc::collect(2), 2);
    assert_eq!(alive.get(), Some(false));
    gc::enable();
}

#[test]
fn resurrection_in_a_collection_saves_what_it_reaches_and_is_not_counted() {
    gc::disable();
    gc::collect(2);
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let a = Class::with_finalizer("Phoenix", move |me: &Instance| {
        c.set(c.get() + 1);
        KEEP.with(|k| k.borrow_mut().push(me.clone().into_obj()));
    });
    let plain = Class::new("B");
    let (wb, wl, b_id);
    {
        // A phoenix in a cycle with a plain instance, which holds a list; and, apart, a
        // 2-cycle of lists that nothing resurrects.
        let (p, b) = (a.instantiate(), plain.instantiate());
        p.setattr("friend", b.clone());
        b.setattr("friend", p.clone());
        let l = List::new();
        b.setattr("data", l.clone());
        wb = WeakRef::new(&b).unwrap();
        b_id = id(&b);
        wl = l.clone();
        let (x, y) = (List::new(), List::new());
        x.append(y.clone());
        y.append(x);
    }
    let before = gc::get_objects(None).len();
    // CPython 3.11 counts what is still unreachable after the finalizers: the lists' cycle.
    assert_eq!(gc::collect(2), 2);
    assert_eq!(calls.get(), 1);
    assert_eq!(gc::get_objects(None).len(), before - 2);
    // The phoenix, its friend, both dicts and the list are intact and tracked.
    {
        let p = KEEP.with(|k| k.borrow()[0].clone());
        let p = Instance::cast(&p).unwrap();
        let b = p.getattr("friend").unwrap();
        assert_eq!(id(&b), b_id);
        // As in CPython, weak references to the garbage were cleared before the finalizers ran,
        // also those to objects that are resurrected.
        assert!(wb.is_dead());
        let b = Instance::cast(&b).unwrap();
        assert!(b.getattr("data").unwrap().is(&wl));
        assert!(gc::is_tracked(b) && gc::is_tracked(p) && gc::is_tracked(&wl));
    }
    // Let go again: now all of it is garbage, and no finalizer runs a second time.
    drop(wl);
    KEEP.with(|k| k.borrow_mut().clear());
    assert_eq!(gc::collect(2), 5);
    assert_eq!(calls.get(), 1);
    gc::enable();
}

#[test]
fn finalizers_may_collect_allocate_and_drop_garbage() {
    gc::disable();
    let a = Class::with_finalizer("A", |me: &Instance| {
        assert_eq!(gc::collect(2), 0, "a collection is running");
        // Allocates containers (the automatic trigger must not re-enter) and drops a
        // reference to other garbage.
        gc::enable();
        for _ in 0..2000 {
            drop(List::new());
        }
        gc::disable();
        let _ = me.delattr("child");
        me.setattr("fresh", List::new());
    });
    {
        let (a1, a2) = (a.instantiate(), a.instantiate());
        a1.setattr("child", a2.clone());
        a2.setattr("child", a1.clone());
    }
    // Each finalizer drops the reference that held the other instance: everything is freed
    // by counts once the finalizers have run, and not counted. python3.11, with the same
    // program (`__dict__` asked for): 0, then 0.
    assert_eq!(gc::collect(2), 0);
    assert_eq!(gc::collect(2), 0);
    gc::enable();
}

#[test]
fn callbacks_see_start_and_stop_of_every_collection() {
    gc::disable();
    gc::collect(2);
    let log: Rc<RefCell<Vec<(gc::Phase, gc::Info)>>> = Rc::default();
    let l = log.clone();
    let id = gc::callbacks::append(move |phase, info| l.borrow_mut().push((phase, *info)))
        .expect("a runtime");
    assert_eq!(gc::callbacks::count(), 1);
    {
        let (x, y) = (List::new(), List::new());
        x.append(y.clone());
        y.append(x);
    }
    assert_eq!(gc::collect(2), 2);
    let info = |generation, collected| gc::Info {
        generation,
        collected,
        uncollectable: 0,
    };
    assert_eq!(
        *log.borrow(),
        [
            (gc::Phase::Start, info(2, 0)),
            (gc::Phase::Stop, info(2, 2))
        ]
    );
    assert_eq!(gc::Phase::Start.as_str(), "start");
    // Automatic collections too.
    log.borrow_mut().clear();
    gc::enable();
    let keep: Vec<List> = (0..701).map(|_| List::new()).collect();
    assert_eq!(log.borrow().first(), Some(&(gc::Phase::Start, info(0, 0))));
    assert_eq!(log.borrow().len(), 2);
    gc::disable();
    drop(keep);
    // Removed, it is called no more.
    assert!(gc::callbacks::remove(id));
    assert!(!gc::callbacks::remove(id));
    log.borrow_mut().clear();
    gc::collect(0);
    assert!(log.borrow().is_empty());
    gc::enable();
}

#[test]
fn a_callback_may_collect_and_change_the_list() {
    let nested = Rc::new(Cell::new(usize::MAX));
    let n = nested.clone();
    gc::callbacks::append(move |phase, _| {
        if phase == gc::Phase::Start {
            n.set(gc::collect(2));
            // Takes effect at the next collection.
            gc::callbacks::append(|_, _| {});
        }
    });
    gc::collect(1);
    assert_eq!(nested.get(), 0, "a collection is running");
    assert_eq!(gc::callbacks::count(), 2);
    gc::callbacks::clear();
    assert_eq!(gc::callbacks::count(), 0);
}
