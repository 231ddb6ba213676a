//! `Int` against python3 as a big-integer oracle: random operands of up to 80 decimal digits,
//! sums, differences, products and comparisons computed here and by `python3` in the same run;
//! every line must agree. Skipped (with a message) where no `python3` is on the PATH.

use std::fmt::Write as _;
use std::process::Command;

use pymalloc_objects::Int;

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn decimal(&mut self) -> String {
        let n = 1 + (self.next() % 80) as usize;
        let mut s = String::new();
        if self.next().is_multiple_of(2) {
            s.push('-');
        }
        for _ in 0..n {
            s.push(char::from(b'0' + (self.next() % 10) as u8));
        }
        s
    }
}

#[test]
fn big_int_arithmetic_agrees_with_python() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut script, mut ours) = (String::new(), String::new());
    for _ in 0..500 {
        let (a, b, c) = (rng.decimal(), rng.decimal(), rng.decimal());
        let (x, y, z) = (
            Int::parse(&a).unwrap(),
            Int::parse(&b).unwrap(),
            Int::parse(&c).unwrap(),
        );
        writeln!(
            script,
            "a, b, c = int('{a}'), int('{b}'), int('{c}')\nprint(a + b, a - b, a * b * c, (a > b) - (a < b), hash(a))"
        )
        .unwrap();
        writeln!(
            ours,
            "{} {} {} {} {}",
            x.add(&y),
            x.sub(&y),
            x.mul(&y).mul(&z),
            x.compare(&y) as i32,
            x.hash().unwrap()
        )
        .unwrap();
    }
    let out = match Command::new("python3").arg("-c").arg(&script).output() {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        Ok(o) => panic!("python3 failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("skipped: no python3 ({e})");
            return;
        }
    };
    for (i, (p, r)) in out.lines().zip(ours.lines()).enumerate() {
        assert_eq!(r, p, "case {i}");
    }
    assert_eq!(out.lines().count(), 500);
}
