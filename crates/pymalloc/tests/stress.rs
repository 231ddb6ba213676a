//! A stress test in the spirit of mimalloc's test-stress: more threads than cores, a random
//! live set of random sizes (some above the 512-byte threshold), blocks handed between threads
//! through a shared exchange and freed there, contents verified on every free, and threads
//! that exit while others still hold their blocks (each round starts new threads that adopt
//! what the previous ones left). A fixed number of iterations; deterministic requests.

use std::sync::Mutex;

use pymalloc::PyMalloc;

#[global_allocator]
static GLOBAL: PyMalloc = PyMalloc::new();

/// Threads per round and rounds: fewer under Miri.
const THREADS: usize = if cfg!(miri) { 4 } else { 8 };
const ROUNDS: usize = if cfg!(miri) { 2 } else { 6 };
const EXCHANGE: usize = 512;
/// Sizes above the threshold reach 513 + this; a resize reaches this. Smaller under Miri, where
/// writing and checking each byte is what takes the time; both still cross every route (within
/// the pools, between classes, between the pools and layer +1).
const LARGE_SPREAD: usize = if cfg!(miri) { 600 } else { 4000 };
const RESIZE_MAX: usize = if cfg!(miri) { 800 } else { 2000 };

/// Work per thread per round: 20 000 steps times `PYMALLOC_STRESS_SCALE` (default 1, or 1/200
/// under Miri).
fn steps() -> usize {
    let scale: f64 = std::env::var("PYMALLOC_STRESS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(miri) { 1.0 / 200.0 } else { 1.0 });
    ((20_000.0 * scale) as usize).max(100)
}

struct Rng(u64);
impl Rng {
    fn bits(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }
}

/// A block whose every byte is derived from its tag.
struct Obj {
    data: Vec<u8>,
    tag: u64,
}

impl Obj {
    fn new(rng: &mut Rng, tag: u64) -> Obj {
        let size = match rng.below(100) {
            0..=69 => 1 + rng.below(128),
            70..=94 => 1 + rng.below(512),
            _ => 513 + rng.below(LARGE_SPREAD),
        };
        let data = (0..size)
            .map(|i| (tag as usize).wrapping_mul(31).wrapping_add(i) as u8)
            .collect();
        Obj { data, tag }
    }

    fn check(&self) {
        for (i, &b) in self.data.iter().enumerate() {
            assert_eq!(
                b,
                (self.tag as usize).wrapping_mul(31).wrapping_add(i) as u8,
                "object {} damaged at {i}",
                self.tag
            );
        }
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.check();
    }
}

#[test]
fn many_threads_random_sizes_cross_thread_frees_and_thread_exit() {
    let exchange: Vec<Mutex<Option<Obj>>> = (0..EXCHANGE).map(|_| Mutex::new(None)).collect();
    let steps = steps();
    for round in 0..ROUNDS {
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let exchange = &exchange;
                s.spawn(move || {
                    let mut rng = Rng((round * THREADS + t) as u64 * 0x9E37_79B9 + 1);
                    let mut live: Vec<Obj> = Vec::new();
                    for k in 0..steps {
                        let tag = ((round * THREADS + t) as u64) << 32 | k as u64;
                        match rng.below(10) {
                            0..=4 => live.push(Obj::new(&mut rng, tag)),
                            5..=6 if !live.is_empty() => {
                                let i = rng.below(live.len());
                                drop(live.swap_remove(i));
                            }
                            7 if !live.is_empty() => {
                                // Grow or shrink one in place or across classes.
                                let i = rng.below(live.len());
                                let o = &mut live[i];
                                o.check();
                                let new_len = 1 + rng.below(RESIZE_MAX);
                                o.data.resize(new_len, 0);
                                for (j, b) in o.data.iter_mut().enumerate() {
                                    *b = (o.tag as usize).wrapping_mul(31).wrapping_add(j) as u8;
                                }
                            }
                            _ => {
                                // Swap with the exchange: hand ours over, adopt another's.
                                let slot = &exchange[rng.below(EXCHANGE)];
                                let mine = if live.is_empty() {
                                    None
                                } else {
                                    Some(live.swap_remove(rng.below(live.len())))
                                };
                                let theirs = std::mem::replace(&mut *slot.lock().unwrap(), mine);
                                if let Some(o) = theirs {
                                    o.check();
                                    live.push(o);
                                }
                            }
                        }
                    }
                    // Leave some objects behind in the exchange for the next round's threads,
                    // free the rest here, and exit.
                    for o in live.drain(..).take(EXCHANGE / THREADS) {
                        let slot = &exchange[rng.below(EXCHANGE)];
                        drop(slot.lock().unwrap().replace(o));
                    }
                });
            }
        });
        GLOBAL
            .check_invariants()
            .unwrap_or_else(|c| panic!("round {round}: {c}"));
    }
    let held = exchange
        .iter()
        .filter(|s| s.lock().unwrap().is_some())
        .count();
    assert!(held > 0, "some objects outlived the threads that made them");
    drop(exchange);
    GLOBAL.check_invariants().unwrap();
}
