//! The debug hooks' aborting path: each kind of corruption in a child process (this binary
//! re-executed with `PYMALLOC_DEBUG_CASE` set), asserting on its report and its death by
//! SIGABRT. Over both layers: malloc (`RawMalloc`) and, as `#[global_allocator]`-style use,
//! a second `Debug` with another API id.

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use pymalloc_raw::RawMalloc;
use pymalloc_raw::debug::{Debug, api};

static OBJ: Debug<RawMalloc> = Debug::new(RawMalloc, api::OBJECT);
static MEM: Debug<RawMalloc> = Debug::new(RawMalloc, api::MEM);

fn child(case: &str) {
    let l = Layout::from_size_align(10, 1).unwrap();
    // SAFETY: deliberately wrong, to be caught and reported before anything else happens.
    unsafe {
        let p = OBJ.alloc(l);
        match case {
            "overrun" => {
                p.add(10).write(0x41);
                OBJ.dealloc(p, l);
            }
            "underrun" => {
                p.sub(1).write(0x42);
                OBJ.dealloc(p, l);
            }
            "double-free" => {
                OBJ.dealloc(p, l);
                OBJ.dealloc(p, l);
            }
            "wrong-api" => MEM.dealloc(p, l),
            "foreign" => {
                let mut local = [7u8; 64];
                OBJ.dealloc(local.as_mut_ptr().add(32), l);
            }
            "wrong-size" => OBJ.dealloc(p, Layout::from_size_align(12, 1).unwrap()),
            "realloc-overrun" => {
                p.add(11).write(0);
                OBJ.realloc(p, l, 100);
            }
            _ => unreachable!("unknown case"),
        }
    }
    std::process::exit(0); // only reached if the hooks missed it
}

fn run(case: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "each_corruption_is_reported",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PYMALLOC_DEBUG_CASE", case)
        .output()
        .unwrap();
    (
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[cfg_attr(
    miri,
    ignore = "runs each case in a child process, which Miri cannot spawn"
)]
fn each_corruption_is_reported() {
    if let Ok(case) = std::env::var("PYMALLOC_DEBUG_CASE") {
        child(&case);
        return;
    }
    let cases: &[(&str, &[&str])] = &[
        (
            "overrun",
            &[
                "Debug memory block at address p=0x",
                ": API 'o'",
                "    10 bytes originally requested",
                "The 7 pad bytes at p-7 are FORBIDDENBYTE, as expected.",
                "are not all FORBIDDENBYTE (0xfd):",
                "        at tail+0: 0x41 *** OUCH",
                "        at tail+1: 0xfd\n",
                "made by call #1 to debug malloc/realloc",
                "Data at p: cd cd cd cd cd cd cd cd cd cd",
                "Fatal error: Debug::dealloc: bad trailing pad byte",
            ],
        ),
        (
            "underrun",
            &[
                "are not all FORBIDDENBYTE",
                "at p-1: 0x42 *** OUCH",
                "Fatal error: Debug::dealloc: bad leading pad byte",
            ],
        ),
        ("double-free", &["Fatal error: Debug::dealloc: double free"]),
        (
            "wrong-api",
            &[
                "Fatal error: Debug::dealloc: bad ID at p=0x",
                "allocated using API 'o', verified using API 'm'",
            ],
        ),
        (
            "foreign",
            &[
                "Fatal error: Debug::dealloc: bad ID",
                "verified using API 'o'",
            ],
        ),
        (
            "wrong-size",
            &[
                "size passed to free differs",
                "10 bytes allocated, 12 bytes freed",
            ],
        ),
        (
            "realloc-overrun",
            &[
                "at tail+1: 0x00 *** OUCH",
                "Fatal error: Debug::realloc: bad trailing pad byte",
            ],
        ),
    ];
    for (case, expected) in cases {
        let (signal, stderr) = run(case);
        assert_eq!(
            signal,
            Some(libc::SIGABRT),
            "{case}: not aborted; stderr:\n{stderr}"
        );
        for e in *expected {
            assert!(
                stderr.contains(e),
                "{case}: report lacks {e:?}; stderr:\n{stderr}"
            );
        }
    }
}
