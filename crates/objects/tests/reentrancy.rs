//! Code of the caller's that runs inside a deallocation or a collection: finalizers, weak-
//! reference callbacks (and the drops of their captures), `gc.callbacks`. It may panic, free
//! what the collector is walking, resurrect garbage, or set attributes on what is being made;
//! the runtime must stay sound and count as CPython 3.11 counts. Each test runs on its own
//! thread, so its own runtime, and takes `SERIAL`: one counts pymalloc's blocks in use. The test
//! harness does not wait for a test's thread to exit, and a thread's runtime (its objects and
//! free lists) is freed as the thread exits, after its test released `SERIAL`: so `serial()`
//! also waits until the previous holder's thread has dropped its thread-locals.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use pymalloc_objects::{
    Class, Instance, Int, List, Obj, Str, WeakRef, WeakValueDict, allocator, clear_free_lists, gc,
    set_free_lists,
};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Test threads that took `SERIAL` and have not yet dropped their thread-locals.
static ALIVE: AtomicUsize = AtomicUsize::new(0);

/// Leaves `ALIVE` as its thread's thread-locals are dropped. Set first in each test, so it is
/// dropped last (thread-locals are dropped in the reverse order of their first use).
struct Alive;

impl Drop for Alive {
    fn drop(&mut self) {
        ALIVE.fetch_sub(1, SeqCst);
    }
}

thread_local! {
    static ALIVE_MARK: RefCell<Option<Alive>> = const { RefCell::new(None) };
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    while ALIVE.load(SeqCst) != 0 {
        std::thread::yield_now();
    }
    ALIVE.fetch_add(1, SeqCst);
    ALIVE_MARK.with(|a| *a.borrow_mut() = Some(Alive));
    guard
}

thread_local! {
    static KEEP: RefCell<Vec<Obj>> = const { RefCell::new(Vec::new()) };
}

fn churn() {
    for _ in 0..100 {
        let l = List::new();
        l.append(List::new());
        drop(l);
    }
}

#[test]
fn a_panicking_finalizer_is_reported_and_the_runtime_carries_on() {
    let _serial = serial();
    // Before: the deallocation loop's queue, on the unwound frame, stayed published, and the
    // next deallocation pushed onto freed memory.
    let a = Class::with_finalizer("Boom", |_| panic!("boom in __del__"));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(a.instantiate())));
    assert!(
        r.is_ok(),
        "caught and reported inside, as CPython ignores it"
    );
    churn();
    // In a collection too: the collector is not left held.
    gc::disable();
    gc::collect(2);
    {
        let x = a.instantiate();
        x.setattr("me", x.clone());
    }
    assert_eq!(gc::collect(2), 2);
    {
        let l = List::new();
        l.append(l.clone());
    }
    assert_eq!(gc::collect(2), 1);
    gc::enable();
}

#[test]
fn a_panicking_gc_callback_does_not_hold_the_collector() {
    let _serial = serial();
    gc::disable();
    let id = gc::callbacks::append(|phase, _| {
        if phase == gc::Phase::Start {
            panic!("in a gc callback")
        }
    })
    .unwrap();
    gc::collect(2);
    gc::callbacks::remove(id);
    {
        let l = List::new();
        l.append(l.clone());
    }
    assert_eq!(gc::collect(2), 1);
    gc::enable();
}

#[test]
fn a_weak_reference_callback_may_panic() {
    let _serial = serial();
    let a = Class::new("A");
    let x = a.instantiate();
    let _w = WeakRef::with_callback(&x, |_| panic!("in a weakref callback")).unwrap();
    drop(x);
    churn();
}

struct UpgradeOnDrop(WeakRef);
impl Drop for UpgradeOnDrop {
    fn drop(&mut self) {
        if let Some(o) = self.0.upgrade() {
            // Before: ran inside a traverse, before the references to garbage were cleared.
            Instance::cast(&o).unwrap().dict().clear();
            std::mem::forget(Str::new("abcdefg"));
            KEEP.with(|k| k.borrow_mut().push(o));
        }
    }
}

#[test]
fn dropping_a_garbage_references_callback_cannot_reach_the_garbage() {
    let _serial = serial();
    set_free_lists(false);
    gc::disable();
    gc::collect(2);
    let c = Class::new("C");
    let target = c.instantiate();
    {
        let i = c.instantiate();
        i.setattr("me", i.clone());
        i.setattr("payload", List::new());
        let guard = UpgradeOnDrop(WeakRef::new(&i).unwrap());
        // Held only by `i`'s dict: garbage, so its callback is dropped, not called.
        i.setattr(
            "w1",
            WeakRef::with_callback(&target, move |_| {
                let _ = &guard;
            })
            .unwrap(),
        );
        i.setattr("w2", WeakRef::with_callback(&target, |_| {}).unwrap());
    }
    // The instance, its dict, the payload list; the guard sees its referent dead.
    assert_eq!(gc::collect(2), 3);
    assert!(KEEP.with(|k| k.borrow().is_empty()));
    set_free_lists(true);
    gc::enable();
}

#[test]
fn a_dict_made_during_the_first_setattr_is_not_lost() {
    let _serial = serial();
    // Before: `Instance::dict()` made its dict, which ran a collection, whose callback gave the
    // instance a dict first; the first dict was then overwritten (and leaked).
    fn in_use() -> usize {
        clear_free_lists();
        let s = allocator().stats();
        s.blocks_in_use() + s.large_blocks
    }
    drop(Str::intern("a"));
    drop(Str::intern("b"));
    drop(Int::new(2)); // a small int: made once, kept
    let c = Class::new("A");
    drop(c.instantiate().dict());
    gc::disable();
    gc::collect(2);
    let base = in_use();
    {
        let x = c.instantiate();
        let x2 = x.clone();
        let id = gc::callbacks::append(move |phase, _| {
            if phase == gc::Phase::Start {
                x2.setattr("a", Str::new("set by the callback"));
            }
        })
        .unwrap();
        gc::set_threshold(1, 10, 10);
        gc::enable();
        x.setattr("b", Int::new(2));
        gc::disable();
        gc::set_threshold(700, 10, 10);
        gc::callbacks::remove(id);
        assert!(x.getattr("a").is_ok(), "the callback's attribute is kept");
        assert!(x.getattr("b").is_ok());
    }
    gc::collect(2);
    assert_eq!(in_use(), base, "no block leaked");
    gc::enable();
}

#[test]
fn what_finalizers_free_by_counts_is_not_counted() {
    let _serial = serial();
    // python3.11 (with `__dict__` asked for, so that its dicts are objects as here): 0, 0, 2.
    gc::disable();
    gc::collect(2);
    let f = Class::with_finalizer("F", |me: &Instance| me.delattr("friend").unwrap());
    let b = Class::new("B");
    {
        let (x, y) = (f.instantiate(), b.instantiate());
        x.setattr("friend", y.clone());
        y.setattr("friend", x.clone());
    }
    let n1 = gc::collect(2);
    let g = Class::with_finalizer("G", |me: &Instance| {
        List::cast(&me.getattr("l").unwrap()).unwrap().clear()
    });
    {
        let x = g.instantiate();
        let l = List::from_objs([x.clone().into_obj()]);
        x.setattr("l", l);
    }
    let n2 = gc::collect(2);
    let h = Class::with_finalizer("H", |me: &Instance| me.delattr("extra").unwrap());
    {
        let x = h.instantiate();
        x.setattr("me", x.clone());
        x.setattr("extra", List::from_objs([List::new().into_obj()]));
    }
    let n3 = gc::collect(2);
    assert_eq!((n1, n2, n3), (0, 0, 2));
    gc::enable();
}

#[test]
fn weak_references_freed_by_their_callbacks_are_counted() {
    let _serial = serial();
    // python3.11: 3 for each (the instance, its dict, the weak reference).
    gc::disable();
    gc::collect(2);
    let a = Class::new("A");
    let d = WeakValueDict::new();
    {
        let x = a.instantiate();
        x.setattr("me", x.clone());
        d.insert(Str::new("k"), &x).unwrap();
    }
    assert_eq!(gc::collect(2), 3);
    let holder: Rc<RefCell<Vec<WeakRef>>> = Rc::default();
    {
        let x = a.instantiate();
        x.setattr("me", x.clone());
        let h = holder.clone();
        holder
            .borrow_mut()
            .push(WeakRef::with_callback(&x, move |_| h.borrow_mut().clear()).unwrap());
    }
    assert_eq!(gc::collect(2), 3);
    gc::enable();
}

thread_local! {
    static RESURRECTED: RefCell<Vec<Option<Obj>>> = const { RefCell::new(Vec::new()) };
    static HELD: RefCell<Vec<WeakRef>> = const { RefCell::new(Vec::new()) };
    static NESTED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn what_the_collectors_letting_go_resurrects_stays_tracked() {
    // Before: every survivor was checked before the collector let go of the first object; a
    // callback run by that release resurrected a later one, which then stayed untracked and
    // its later cycles leaked. python3.11 (same program, `__dict__` asked for): 4, tracked,
    // then 2 and dead.
    let _serial = serial();
    gc::disable();
    gc::collect(2);
    let plain = Class::new("Plain");
    let f = Class::with_finalizer("F", |me: &Instance| {
        let b = me.getattr("x").unwrap();
        let ws = WeakRef::new(me).unwrap();
        let wb = WeakRef::with_callback(&b, move |_| {
            RESURRECTED.with(|k| k.borrow_mut().push(ws.upgrade()))
        })
        .unwrap();
        HELD.with(|g| g.borrow_mut().push(wb));
    });
    {
        let b = plain.instantiate(); // first on the list: let go of first
        let a = f.instantiate();
        a.setattr("x", b.clone());
        b.setattr("y", a.clone());
    }
    assert_eq!(gc::collect(2), 4);
    let back = RESURRECTED
        .with(|k| k.borrow_mut().pop())
        .flatten()
        .expect("resurrected by the callback");
    assert!(gc::is_tracked(&back));
    Instance::cast(&back).unwrap().setattr("me", back.clone());
    let w = WeakRef::new(&back).unwrap();
    drop(back);
    assert_eq!(gc::collect(2), 2);
    assert!(w.is_dead());
    HELD.with(|g| g.borrow_mut().clear());
    gc::enable();
}

#[test]
fn a_collection_inside_a_deallocation_frees_what_finalizers_orphaned() {
    // Before: inside a deallocation loop what the collector let go of was only queued, its
    // references looked like outside ones, and a cycle they reached survived. python3.11:
    // 8 and 0 directly; 8 from inside a deallocation, then 0.
    let _serial = serial();
    gc::disable();
    let plain = Class::new("Plain");
    let orphaner = Class::with_finalizer("Orphaner", |me: &Instance| me.delattr("c").unwrap());
    let trigger = Class::with_finalizer("Trigger", |_| {
        let n = gc::collect(2);
        NESTED.with(|r| r.borrow_mut().push(n));
    });
    let build = || {
        let a = orphaner.instantiate();
        let b = plain.instantiate();
        a.setattr("b", b.clone());
        b.setattr("a", a.clone());
        let c = plain.instantiate();
        a.setattr("c", c.clone());
        let e = plain.instantiate();
        let f = plain.instantiate();
        e.setattr("f", f.clone());
        f.setattr("e", e.clone());
        c.setattr("e", e.clone());
    };
    gc::collect(2);
    build();
    assert_eq!((gc::collect(2), gc::collect(2)), (8, 0));
    build();
    drop(trigger.instantiate()); // its finalizer collects inside the deallocation loop
    assert_eq!(NESTED.with(|r| r.borrow().clone()), [8]);
    assert_eq!(gc::collect(2), 0);
    gc::enable();
}

#[test]
fn a_long_chain_orphaned_by_a_finalizer_is_freed_in_one_pass() {
    // Before: freed one link per pass over the garbage, quadratic (64 000 links took 5 s in a
    // release build; this would take minutes). python3.11: 0, as here.
    let _serial = serial();
    gc::disable();
    gc::collect(2);
    let node = Class::new("Node");
    let head_class = Class::with_finalizer("Head", |me: &Instance| me.delattr("next").unwrap());
    let n = 100_000;
    let probe;
    {
        let head = head_class.instantiate();
        let nodes: Vec<Instance> = (0..n).map(|_| node.instantiate()).collect();
        head.setattr("next", nodes[0].clone());
        for i in 0..n - 1 {
            nodes[i].setattr("next", nodes[i + 1].clone());
        }
        nodes[n - 1].setattr("next", head.clone());
        probe = WeakRef::new(&nodes[n / 2]).unwrap();
    }
    assert_eq!(gc::collect(2), 0);
    assert!(probe.is_dead());
    gc::enable();
}

struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the drop of what a gc callback captured");
    }
}

#[test]
fn a_gc_callback_that_removes_itself_may_panic_in_its_drop() {
    // Before: the drop ran outside the guard and the panic came out of an allocation.
    let _serial = serial();
    let id = Rc::new(std::cell::Cell::new(None));
    let id2 = id.clone();
    let bomb = Bomb;
    let i = gc::callbacks::append(move |_, _| {
        let _ = &bomb;
        if let Some(i) = id2.take() {
            gc::callbacks::remove(i);
        }
    })
    .unwrap();
    id.set(Some(i));
    gc::set_threshold(1, 10, 10);
    gc::enable();
    let cls = Class::new("A");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let keep: Vec<Instance> = (0..20).map(|_| cls.instantiate()).collect();
        drop(keep);
    }));
    gc::set_threshold(700, 10, 10);
    assert!(r.is_ok(), "contained where the collection runs");
    assert_eq!(gc::callbacks::count(), 0);
}
