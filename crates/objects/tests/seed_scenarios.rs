//! The seed text's four scenarios, run here and by python3 in the same test: reference counts,
//! `getsizeof`, the number collected, thresholds, the gc callbacks' arguments, finalizers and
//! resurrection, the weak-reference error texts. Every fact must be the same. Skipped (with a
//! message) where no `python3` is on the PATH; CI checks that it is.

#[path = "../examples/common/scenarios.rs"]
mod scenarios;

#[test]
fn the_seed_scenarios_print_what_python3_prints() {
    let ours = scenarios::ours();
    let theirs = match scenarios::python() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let keys = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        keys(&ours),
        keys(&theirs),
        "the same steps, in the same order"
    );
    for ((k, here), (_, py)) in ours.iter().zip(&theirs) {
        assert_eq!(here, py, "{k}: here {here}, python3 {py}");
    }
}
