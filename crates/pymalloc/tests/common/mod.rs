//! Helpers shared by the test binaries that run a case in a child process with a lowered
//! address-space limit.

/// Sets the soft `RLIMIT_AS` to `bytes` (at most the hard limit).
pub(crate) fn set_limit(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-parameter / in-parameter.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &lim), 0);
    }
}

/// Address space in use now, from the first field of /proc/self/statm.
pub(crate) fn vm_size() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().next().unwrap().parse::<u64>().unwrap() * 4096
}

/// Gives malloc free space to spare (allocate, then free all but the last chunk, which keeps
/// the heap from being trimmed), then limits the address space to what is in use plus 512 KiB:
/// no 1 MiB arena can be mapped any more, but malloc can still serve small requests.
pub(crate) fn leave_room_for_malloc_only() {
    let warm: Vec<*mut libc::c_void> = (0..40_000)
        // SAFETY: malloc has no preconditions; the results are freed below.
        .map(|_| unsafe { libc::malloc(200) })
        .collect();
    for &p in &warm[..warm.len() - 1] {
        // SAFETY: each came from malloc and is freed once.
        unsafe { libc::free(p) };
    }
    set_limit(vm_size() + (512 << 10));
}
