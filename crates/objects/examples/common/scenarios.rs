//! The seed text's four scenarios as facts to compare with python3: the same steps here
//! (with pymalloc-objects) and in `scenarios.py` (run by python3), each printing
//! `key=value` lines with the same keys. Shared by the `seed` example and the
//! `seed_scenarios` test (included with `#[path]`).

use std::cell::{Cell, RefCell};
use std::process::Command;
use std::rc::Rc;

use pymalloc_objects::{
    Class, Dict, Instance, Int, List, Obj, Str, WeakRef, WeakValueDict, gc, getrefcount, getsizeof,
    getweakrefcount,
};

/// The python3 side.
pub(crate) const PYTHON: &str = include_str!("scenarios.py");

fn py_bool(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

/// The facts, computed here, in order.
pub(crate) fn ours() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut show = |k: &str, v: String| out.push((k.to_string(), v));

    // 1. Reference counts and sizes (the seed text's TEST01.py).
    let list = List::from_objs([Int::new(1).into_obj(), Int::new(2).into_obj()]);
    show("1 getsizeof([1, 2])", getsizeof(&list).to_string());
    show("1 getrefcount(list)", getrefcount(&list).to_string());
    list.append(Int::new(3));
    show(
        "1 getrefcount(list) after append(3)",
        getrefcount(&list).to_string(),
    );
    show("1 getsizeof after append(3)", getsizeof(&list).to_string());
    show("1 list after append(3)", list.repr().unwrap());
    show(
        "1 1 is 1 (small int)",
        py_bool(Int::new(1).is(&Int::new(1))),
    );
    show("1 257 is 257", py_bool(Int::new(257).is(&Int::new(257))));

    // 2. The leak.
    let a = Class::new("A");
    let cycle_ref = || {
        let (a1, a2) = (a.instantiate(), a.instantiate());
        a1.setattr("child", a2.clone());
        a2.setattr("child", a1.clone());
    };
    gc::collect(2);
    gc::disable();
    show(
        "2 gc.isenabled() after gc.disable()",
        py_bool(gc::isenabled()),
    );
    for _ in 0..1000 {
        cycle_ref();
    }
    show(
        "2 gc.collect() after 1000 cycle_ref()",
        gc::collect(2).to_string(),
    );
    show("2 gc.collect() again", gc::collect(2).to_string());

    // 3. The fix: a weak back-reference.
    let fired = Rc::new(Cell::new(0));
    for _ in 0..1000 {
        let (a1, a2) = (a.instantiate(), a.instantiate());
        a1.setattr("child", a2.clone());
        let f = fired.clone();
        a2.setattr(
            "child",
            WeakRef::with_callback(&a1, move |_| f.set(f.get() + 1)).unwrap(),
        );
    }
    show(
        "3 callbacks fired for 1000 cycle_ref_weak()",
        fired.get().to_string(),
    );
    show("3 gc.collect() after them", gc::collect(2).to_string());
    let builtins: [(&str, Obj); 4] = [
        ("list", List::new().into_obj()),
        ("dict", Dict::new().into_obj()),
        ("int", Int::new(1).into_obj()),
        ("str", Str::new("s").into_obj()),
    ];
    for (what, obj) in builtins {
        let r = match WeakRef::new(&obj) {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string(),
        };
        show(&format!("3 weakref.ref({what})"), r);
    }
    let a1 = a.instantiate();
    show(
        "3 ref(a1) is ref(a1)",
        py_bool(WeakRef::new(&a1).unwrap().is(&WeakRef::new(&a1).unwrap())),
    );
    let r = WeakRef::new(&a1).unwrap();
    show("3 getweakrefcount(a1)", getweakrefcount(&a1).to_string());
    let d = WeakValueDict::new();
    d.insert(Str::new("a"), &a1).unwrap();
    show("3 len(WeakValueDictionary) with a1", d.len().to_string());
    drop(a1);
    show("3 ... after del a1", d.len().to_string());
    show(
        "3 ref(a1)() after del a1",
        r.upgrade().map_or("None".into(), |o| o.repr().unwrap()),
    );

    // 4. The gc module.
    gc::enable();
    gc::collect(2);
    show("4 gc.get_threshold()", format!("{:?}", gc::get_threshold()));
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let l = log.clone();
    let cb = gc::callbacks::append(move |phase, info| {
        l.borrow_mut().push(format!(
            "{} {{'generation': {}, 'collected': {}, 'uncollectable': {}}}",
            phase.as_str(),
            info.generation,
            info.collected,
            info.uncollectable
        ))
    })
    .unwrap();
    let two_cycle = || {
        let (x, y) = (List::new(), List::new());
        y.append(x.clone());
        x.append(y);
    };
    two_cycle();
    show(
        "4 gc.collect() of a 2-cycle of lists",
        gc::collect(2).to_string(),
    );
    show("4 gc.callbacks saw", log.borrow().join("; "));
    gc::callbacks::remove(cb);
    two_cycle();
    show(
        "4 gc.collect(0) of a 2-cycle of lists",
        gc::collect(0).to_string(),
    );
    let tracked: [(&str, Obj); 5] = [
        ("1", Int::new(1).into_obj()),
        ("'a'", Str::new("a").into_obj()),
        ("[]", List::new().into_obj()),
        ("{}", Dict::new().into_obj()),
        ("{'a': []}", {
            let d = Dict::new();
            d.set(Str::new("a"), List::new()).unwrap();
            d.into_obj()
        }),
    ];
    for (what, obj) in tracked {
        show(
            &format!("4 gc.is_tracked({what})"),
            py_bool(gc::is_tracked(&obj)),
        );
    }
    let l = List::from_objs([List::new().into_obj(), Dict::new().into_obj()]);
    show(
        "4 len(gc.get_referents([[], {}]))",
        gc::get_referents(&l).len().to_string(),
    );
    gc::disable();
    let calls = Rc::new(Cell::new(0));
    let keep: Rc<RefCell<Vec<Obj>>> = Rc::default();
    let (c, k) = (calls.clone(), keep.clone());
    let phoenix = Class::with_finalizer("Phoenix", move |me: &Instance| {
        c.set(c.get() + 1);
        k.borrow_mut().push(me.clone().into_obj());
    });
    {
        let p = phoenix.instantiate();
        p.setattr("me", p.clone());
    }
    show(
        "4 gc.collect() when __del__ resurrects",
        gc::collect(2).to_string(),
    );
    show("4 __del__ calls", calls.get().to_string());
    keep.borrow_mut().clear();
    show("4 gc.collect() once let go", gc::collect(2).to_string());
    show("4 __del__ calls after", calls.get().to_string());
    gc::enable();
    out
}

/// The facts from python3 running [`PYTHON`]; `Err` says why there are none.
pub(crate) fn python() -> Result<Vec<(String, String)>, String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .output()
        .map_err(|e| format!("python3 did not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}
