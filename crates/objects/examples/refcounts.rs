//! Reference counts, shared small ints and `getsizeof`, as `sys.getrefcount`, `id` and
//! `sys.getsizeof` show them in Python.
//!
//! Run: `cargo run --release -p pymalloc-objects --example refcounts`

use pymalloc_objects::{Int, List, Obj, getrefcount, getsizeof, id};

fn main() {
    println!("The small int 1: one object, shared by every holder.");
    let one = Int::new(1);
    println!(
        "  one = 1              id {:#x}  getrefcount {}",
        id(&one),
        getrefcount(&one)
    );
    let mut holders: Vec<Obj> = Vec::new();
    for i in 1..=3 {
        holders.push(Int::new(1).into());
        println!(
            "  holder {i} = 1         id {:#x}  getrefcount {}",
            id(&holders[i - 1]),
            getrefcount(&one)
        );
    }
    drop(holders);
    println!(
        "  holders dropped                          getrefcount {}",
        getrefcount(&one)
    );

    println!("\nA fresh list: its count follows its names.");
    let list = List::from_objs([Int::new(1).into_obj(), Int::new(2).into_obj()]);
    println!("  list = [1, 2]        getrefcount {}", getrefcount(&list));
    let alias = list.clone();
    println!("  alias = list         getrefcount {}", getrefcount(&list));
    let holder = List::new();
    holder.append(list.clone());
    println!("  holder.append(list)  getrefcount {}", getrefcount(&list));
    drop(alias);
    println!("  del alias            getrefcount {}", getrefcount(&list));
    drop(holder);
    println!("  del holder           getrefcount {}", getrefcount(&list));

    println!("\ngetsizeof of a list as it grows (CPython 3.11 gives the same figures).");
    println!(
        "  [1, 2]               getsizeof {:>3}  slots {}",
        getsizeof(&list),
        list.allocated()
    );
    list.append(Int::new(3));
    println!(
        "  after append(3)      getsizeof {:>3}  slots {}  (over-allocated, list_resize)",
        getsizeof(&list),
        list.allocated()
    );
    println!("  {list:?}");
}
