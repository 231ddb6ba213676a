# The seed text's four scenarios in python3, printing what examples/common/scenarios.rs computes
# with pymalloc-objects, one "key=value" per line. Run by the `seed` example and the
# `seed_scenarios` test, which compare the two line by line.
import gc, sys, weakref

def show(key, value):
    print(f"{key}={value}")

# 1. Reference counts and sizes (the seed text's TEST01.py).
list_ = [1, 2]
show("1 getsizeof([1, 2])", sys.getsizeof(list_))
show("1 getrefcount(list)", sys.getrefcount(list_))
list_.append(3)
show("1 getrefcount(list) after append(3)", sys.getrefcount(list_))
show("1 getsizeof after append(3)", sys.getsizeof(list_))
show("1 list after append(3)", repr(list_))
show("1 1 is 1 (small int)", int("1") is int("1"))
show("1 257 is 257", int("257") is int("257"))

# 2. The leak. The attribute dicts are made objects (__dict__), as they are here: CPython 3.11
# keeps attributes inline until __dict__ is asked for, and then counts 2 objects per cycle.
class A(object):
    pass

def cycle_ref():
    a1 = A()
    a2 = A()
    a1.child = a2
    a2.child = a1
    a1.__dict__, a2.__dict__

gc.collect()
gc.disable()
show("2 gc.isenabled() after gc.disable()", gc.isenabled())
for _ in range(1000):
    cycle_ref()
show("2 gc.collect() after 1000 cycle_ref()", gc.collect())
show("2 gc.collect() again", gc.collect())

# 3. The fix: a weak back-reference.
fired = [0]
def cycle_ref_weak():
    a1 = A()
    a2 = A()
    a1.child = a2
    a2.child = weakref.ref(a1, lambda r: fired.__setitem__(0, fired[0] + 1))
for _ in range(1000):
    cycle_ref_weak()
show("3 callbacks fired for 1000 cycle_ref_weak()", fired[0])
show("3 gc.collect() after them", gc.collect())
for what, obj in (("list", []), ("dict", {}), ("int", 1), ("str", "s")):
    try:
        weakref.ref(obj)
        show(f"3 weakref.ref({what})", "accepted")
    except TypeError as e:
        show(f"3 weakref.ref({what})", f"TypeError: {e}")
a1 = A()
show("3 ref(a1) is ref(a1)", weakref.ref(a1) is weakref.ref(a1))
r = weakref.ref(a1)
show("3 getweakrefcount(a1)", weakref.getweakrefcount(a1))
d = weakref.WeakValueDictionary()
d["a"] = a1
show("3 len(WeakValueDictionary) with a1", len(d))
del a1
show("3 ... after del a1", len(d))
show("3 ref(a1)() after del a1", r())

# 4. The gc module.
gc.enable()
gc.collect()
show("4 gc.get_threshold()", gc.get_threshold())
log = []
cb = lambda phase, info: log.append(f"{phase} {info}")
gc.callbacks.append(cb)
x = []; y = [x]; x.append(y); del x, y
show("4 gc.collect() of a 2-cycle of lists", gc.collect())
show("4 gc.callbacks saw", "; ".join(log))
gc.callbacks.remove(cb)
x = []; y = [x]; x.append(y); del x, y
show("4 gc.collect(0) of a 2-cycle of lists", gc.collect(0))
for what, obj in (("1", 1), ("'a'", "a"), ("[]", []), ("{}", {}), ("{'a': []}", {"a": []})):
    show(f"4 gc.is_tracked({what})", gc.is_tracked(obj))
show("4 len(gc.get_referents([[], {}]))", len(gc.get_referents([[], {}])))
gc.disable()
calls = [0]
keep = []
class Phoenix:
    def __del__(self):
        calls[0] += 1
        keep.append(self)
p = Phoenix(); p.me = p; p.__dict__; del p
show("4 gc.collect() when __del__ resurrects", gc.collect())
show("4 __del__ calls", calls[0])
keep.clear()
show("4 gc.collect() once let go", gc.collect())
show("4 __del__ calls after", calls[0])
gc.enable()
