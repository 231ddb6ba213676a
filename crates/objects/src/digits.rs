//! Magnitude arithmetic for arbitrary-size integers, laid out like CPython's
//! `int` (`PyLongObject`).
//!
//! # Representation
//!
//! A magnitude is a little-endian slice of `u32` digits in base
//! `2^SHIFT = 2^30` (CPython: `PyLong_SHIFT` is 30 and `digit` is
//! `uint32_t`). Every digit is at most [`MASK`] (CPython: `PyLong_MASK`),
//! i.e. the top two bits of each `u32` are always clear.
//!
//! **Invariant:** magnitudes are *normalized*: the most significant digit (the
//! last element) is never zero, so zero is the empty slice and every value
//! has exactly one representation. All functions here expect normalized
//! inputs and return normalized outputs; use [`normalize`] after building a
//! digit vector by hand.
//!
//! The sign is kept by the caller. The `signed_*` helpers and
//! [`from_i128`]/[`to_i128`] work on `(negative, magnitude)` pairs, where zero
//! is never negative (a `true` flag with an empty magnitude is treated as
//! zero on input and never produced on output).
//!
//! # Correspondence with CPython (`Objects/longobject.c`)
//!
//! * [`add`] is `x_add` and [`sub`] is `x_sub` (magnitude add/subtract with a
//!   carry/borrow propagated through the 30-bit digits).
//! * [`mul`] is the schoolbook `x_mul`; CPython switches to Karatsuba
//!   (`k_mul`) above `KARATSUBA_CUTOFF` digits, which is not done here, so
//!   multiplication is quadratic in the number of digits.
//! * [`divmod_small`] is `inplace_divrem1` / `divrem1`.
//! * [`to_decimal`] follows `long_to_decimal_string_internal`: the value is
//!   converted to base `10^9` (`_PyLong_DECIMAL_BASE`) first. Both it and
//!   [`parse_decimal`] are quadratic, which is why CPython limits
//!   int/str conversions to 4300 digits by default
//!   (`sys.set_int_max_str_digits`); callers exposing these to untrusted input
//!   may want a similar limit.
//!
//! No operation here panics on valid (normalized) input except
//! [`divmod_small`] with a zero divisor.

// Not every caller uses every helper; keep the module warning-free regardless.
#![allow(dead_code)]

use core::cmp::Ordering;

/// Number of value bits per digit. CPython: `PyLong_SHIFT`.
pub(crate) const SHIFT: u32 = 30;

/// Largest digit value, `2^SHIFT - 1`. CPython: `PyLong_MASK`.
pub(crate) const MASK: u32 = (1 << SHIFT) - 1;

/// `10^9`, the base used for decimal conversion (CPython:
/// `_PyLong_DECIMAL_BASE`).
const DEC_BASE: u32 = 1_000_000_000;

/// Decimal digits per [`DEC_BASE`] limb (CPython: `_PyLong_DECIMAL_SHIFT`).
const DEC_DIGITS: usize = 9;

/// Strips high (trailing in the vector) zero digits, restoring the
/// normalization invariant. CPython: `long_normalize`.
pub(crate) fn normalize(v: &mut Vec<u32>) {
    while v.last() == Some(&0) {
        v.pop();
    }
}

/// Converts a `u128` to a normalized magnitude.
pub(crate) fn from_u128(mut x: u128) -> Vec<u32> {
    let mut v = Vec::with_capacity(5);
    while x != 0 {
        v.push((x & u128::from(MASK)) as u32);
        x >>= SHIFT;
    }
    v
}

/// Converts a magnitude to `u128`, or `None` if it does not fit.
pub(crate) fn to_u128(a: &[u32]) -> Option<u128> {
    let mut r: u128 = 0;
    for &d in a.iter().rev() {
        if r >> (128 - SHIFT) != 0 {
            return None;
        }
        r = (r << SHIFT) | u128::from(d);
    }
    Some(r)
}

/// Compares two normalized magnitudes.
pub(crate) fn cmp(a: &[u32], b: &[u32]) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.iter().rev().cmp(b.iter().rev()))
}

/// Returns `a + b`. CPython: `x_add`.
pub(crate) fn add(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut z = Vec::with_capacity(long.len() + 1);
    let mut carry: u32 = 0;
    for (i, &x) in long.iter().enumerate() {
        // At most MASK + MASK + 1 < 2^31: no overflow.
        carry += x + short.get(i).copied().unwrap_or(0);
        z.push(carry & MASK);
        carry >>= SHIFT;
    }
    if carry != 0 {
        z.push(carry);
    }
    z
}

/// Returns `a - b`, normalized. CPython: `x_sub` (for the `a >= b` case).
///
/// Requires `a >= b` (checked with `debug_assert!`). In release builds a
/// violated precondition yields an unspecified (but normalized) result rather
/// than a panic.
pub(crate) fn sub(a: &[u32], b: &[u32]) -> Vec<u32> {
    debug_assert!(cmp(a, b) != Ordering::Less, "digits::sub requires a >= b");
    let mut z = Vec::with_capacity(a.len());
    let mut borrow: u32 = 0;
    for (i, &x) in a.iter().enumerate() {
        // Wrapping arithmetic as in CPython: a negative difference sets bit
        // SHIFT (all digits are < 2^SHIFT), and the low SHIFT bits are the
        // correct digit modulo 2^SHIFT.
        let t = x
            .wrapping_sub(b.get(i).copied().unwrap_or(0))
            .wrapping_sub(borrow);
        z.push(t & MASK);
        borrow = (t >> SHIFT) & 1;
    }
    normalize(&mut z);
    z
}

/// Returns `a * b` by schoolbook multiplication with `u64` accumulators.
/// CPython: `x_mul` (CPython's `k_mul` uses Karatsuba for large operands;
/// this does not).
pub(crate) fn mul(a: &[u32], b: &[u32]) -> Vec<u32> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut z = vec![0u32; a.len() + b.len()];
    for (i, &x) in a.iter().enumerate() {
        if x == 0 {
            continue;
        }
        let x = u64::from(x);
        let mut carry: u64 = 0;
        for (j, &y) in b.iter().enumerate() {
            // (2^30-1) + (2^30-1)^2 + carry(< 2^35) fits easily in u64.
            let t = u64::from(z[i + j]) + x * u64::from(y) + carry;
            z[i + j] = (t & u64::from(MASK)) as u32;
            carry = t >> SHIFT;
        }
        let mut k = i + b.len();
        while carry != 0 {
            // The full product fits in a.len() + b.len() digits, so k stays in
            // bounds.
            let t = u64::from(z[k]) + carry;
            z[k] = (t & u64::from(MASK)) as u32;
            carry = t >> SHIFT;
            k += 1;
        }
    }
    normalize(&mut z);
    z
}

/// Divides `a` by a single nonzero digit `d`, returning
/// `(quotient, remainder)`. CPython: `divrem1` / `inplace_divrem1`.
///
/// `d` is meant to be in `1..=MASK`, but any nonzero `u32` works.
///
/// # Panics
///
/// Panics if `d == 0`.
pub(crate) fn divmod_small(a: &[u32], d: u32) -> (Vec<u32>, u32) {
    assert!(d != 0, "digits::divmod_small: division by zero");
    let d = u64::from(d);
    let mut q = vec![0u32; a.len()];
    let mut rem: u64 = 0;
    for (i, &x) in a.iter().enumerate().rev() {
        // rem < d, so cur < d * 2^SHIFT and the quotient digit is < 2^SHIFT.
        let cur = (rem << SHIFT) | u64::from(x);
        q[i] = (cur / d) as u32;
        rem = cur % d;
    }
    normalize(&mut q);
    (q, rem as u32)
}

/// Formats a magnitude in decimal (no sign); `"0"` for zero.
/// CPython: `long_to_decimal_string_internal`.
pub(crate) fn to_decimal(a: &[u32]) -> String {
    // Convert to base 10^9, little-endian: for each digit from the top,
    // pout = pout * 2^SHIFT + digit.
    let mut pout: Vec<u32> = Vec::with_capacity(a.len() + a.len() / 5 + 1);
    for &digit in a.iter().rev() {
        let mut hi = u64::from(digit);
        for p in pout.iter_mut() {
            let z = (u64::from(*p) << SHIFT) | hi;
            hi = z / u64::from(DEC_BASE);
            *p = (z - hi * u64::from(DEC_BASE)) as u32;
        }
        while hi != 0 {
            pout.push((hi % u64::from(DEC_BASE)) as u32);
            hi /= u64::from(DEC_BASE);
        }
    }
    let Some((&top, rest)) = pout.split_last() else {
        return String::from("0");
    };
    let mut s = String::with_capacity(pout.len() * DEC_DIGITS);
    s.push_str(&top.to_string());
    for &limb in rest.iter().rev() {
        s.push_str(&format!("{limb:09}"));
    }
    s
}

/// Multiplies `v` in place by `m` and adds `c` (`m`, `c` at most `2^32-1`).
fn mul_small_add(v: &mut Vec<u32>, m: u32, c: u32) {
    let mut carry = u64::from(c);
    for x in v.iter_mut() {
        let t = u64::from(*x) * u64::from(m) + carry;
        *x = (t & u64::from(MASK)) as u32;
        carry = t >> SHIFT;
    }
    while carry != 0 {
        v.push((carry & u64::from(MASK)) as u32);
        carry >>= SHIFT;
    }
}

/// Parses an unsigned decimal string: ASCII digits `0`-`9` only, at least one
/// (leading zeros are allowed). Returns `None` for anything else, including
/// an empty string, signs, whitespace and underscores.
pub(crate) fn parse_decimal(s: &str) -> Option<Vec<u32>> {
    let bytes = s.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: Vec<u32> = Vec::with_capacity(bytes.len() / 9 + 1);
    // First chunk takes the remainder so every later chunk has 9 digits.
    let first = match bytes.len() % DEC_DIGITS {
        0 => DEC_DIGITS,
        r => r,
    };
    let (head, tail) = bytes.split_at(first);
    let chunk_value = |c: &[u8]| {
        c.iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    mul_small_add(&mut v, 1, chunk_value(head));
    for chunk in tail.chunks(DEC_DIGITS) {
        mul_small_add(&mut v, DEC_BASE, chunk_value(chunk));
    }
    normalize(&mut v);
    Some(v)
}

/// Number of bits needed to represent the magnitude (`0` for zero).
/// CPython: `_PyLong_NumBits` / `int.bit_length`.
pub(crate) fn bit_length(a: &[u32]) -> u64 {
    match a.last() {
        None => 0,
        Some(&top) => (a.len() as u64 - 1) * u64::from(SHIFT) + u64::from(32 - top.leading_zeros()),
    }
}

/// Builds a signed result, making sure zero is never negative.
fn signed(negative: bool, v: Vec<u32>) -> (bool, Vec<u32>) {
    (negative && !v.is_empty(), v)
}

/// Signed addition on `(negative, magnitude)` pairs. CPython: `long_add`.
pub(crate) fn signed_add(an: bool, a: &[u32], bn: bool, b: &[u32]) -> (bool, Vec<u32>) {
    if an == bn {
        return signed(an, add(a, b));
    }
    match cmp(a, b) {
        Ordering::Less => signed(bn, sub(b, a)),
        _ => signed(an, sub(a, b)),
    }
}

/// Signed subtraction `a - b` on `(negative, magnitude)` pairs. CPython:
/// `long_sub`.
pub(crate) fn signed_sub(an: bool, a: &[u32], bn: bool, b: &[u32]) -> (bool, Vec<u32>) {
    signed_add(an, a, !bn, b)
}

/// Signed multiplication on `(negative, magnitude)` pairs. CPython:
/// `long_mul`.
pub(crate) fn signed_mul(an: bool, a: &[u32], bn: bool, b: &[u32]) -> (bool, Vec<u32>) {
    signed(an != bn, mul(a, b))
}

/// Compares two `(negative, magnitude)` pairs. CPython: `long_compare`.
pub(crate) fn signed_cmp(an: bool, a: &[u32], bn: bool, b: &[u32]) -> Ordering {
    let an = an && !a.is_empty();
    let bn = bn && !b.is_empty();
    match (an, bn) {
        (false, false) => cmp(a, b),
        (true, true) => cmp(b, a),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// Converts an `i128` to a `(negative, magnitude)` pair.
pub(crate) fn from_i128(x: i128) -> (bool, Vec<u32>) {
    (x < 0, from_u128(x.unsigned_abs()))
}

/// Converts a `(negative, magnitude)` pair to `i128`, or `None` if it does
/// not fit (`i128::MIN` is representable).
pub(crate) fn to_i128(n: bool, a: &[u32]) -> Option<i128> {
    let u = to_u128(a)?;
    if n {
        if u <= 1u128 << 127 {
            Some(0u128.wrapping_sub(u) as i128)
        } else {
            None
        }
    } else {
        i128::try_from(u).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64* generator: deterministic, no external crates.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }

        fn next_u128(&mut self) -> u128 {
            (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
        }

        /// Random i128 biased towards interesting sizes and the limits.
        fn i128(&mut self) -> i128 {
            match self.below(8) {
                0 => self.next_u128() as i128,
                1 => {
                    let off = self.below(1 << 20) as i128;
                    if self.below(2) == 0 {
                        i128::MAX - off
                    } else {
                        i128::MIN + off
                    }
                }
                2 => self.below(5) as i128 - 2,
                3 => {
                    // Near a digit boundary 2^(30k).
                    let k = self.below(5) as u32 * SHIFT;
                    let base = if k >= 127 { 1i128 << 126 } else { 1i128 << k };
                    let v = base + self.below(5) as i128 - 2;
                    if self.below(2) == 0 { v } else { -v }
                }
                _ => {
                    let bits = self.below(128) as u32;
                    let v = (self.next_u128() >> (127 - bits.min(126))) as i128;
                    if self.below(2) == 0 { v } else { -v }
                }
            }
        }

        /// Random normalized magnitude of up to `max_len` digits, with extra
        /// weight on all-zero and all-ones digits to exercise carries.
        fn mag(&mut self, max_len: u64) -> Vec<u32> {
            let len = self.below(max_len + 1) as usize;
            let mut v: Vec<u32> = (0..len)
                .map(|_| match self.below(6) {
                    0 => MASK,
                    1 => 0,
                    _ => (self.next_u64() as u32) & MASK,
                })
                .collect();
            normalize(&mut v);
            v
        }
    }

    fn is_normalized(v: &[u32]) -> bool {
        v.last() != Some(&0) && v.iter().all(|&d| d <= MASK)
    }

    fn pow(base: u32, e: u32) -> Vec<u32> {
        let b = from_u128(u128::from(base));
        (0..e).fold(from_u128(1), |acc, _| mul(&acc, &b))
    }

    fn check_signed(r: (bool, Vec<u32>), expected: i128) {
        assert!(is_normalized(&r.1));
        assert!(!(r.0 && r.1.is_empty()), "negative zero");
        assert_eq!(to_i128(r.0, &r.1), Some(expected));
        assert_eq!(r, from_i128(expected));
    }

    #[test]
    fn constants() {
        assert_eq!(SHIFT, 30);
        assert_eq!(MASK, 0x3fff_ffff);
    }

    #[test]
    fn normalize_strips_high_zeros() {
        let mut v = vec![1, 0, 2, 0, 0];
        normalize(&mut v);
        assert_eq!(v, vec![1, 0, 2]);
        let mut z = vec![0, 0];
        normalize(&mut z);
        assert!(z.is_empty());
    }

    #[test]
    fn zero_edge_cases() {
        assert!(from_u128(0).is_empty());
        assert_eq!(to_u128(&[]), Some(0));
        assert_eq!(from_i128(0), (false, vec![]));
        assert_eq!(to_i128(true, &[]), Some(0));
        assert_eq!(to_decimal(&[]), "0");
        assert_eq!(parse_decimal("0"), Some(vec![]));
        assert_eq!(parse_decimal("000000000000000000000"), Some(vec![]));
        assert_eq!(bit_length(&[]), 0);
        assert!(add(&[], &[]).is_empty());
        assert!(sub(&[], &[]).is_empty());
        assert!(sub(&[5], &[5]).is_empty());
        assert!(mul(&[], &[7]).is_empty());
        assert!(mul(&[7], &[]).is_empty());
        assert_eq!(divmod_small(&[], 7), (vec![], 0));
        assert_eq!(cmp(&[], &[]), Ordering::Equal);
        assert_eq!(signed_add(true, &[5], false, &[5]), (false, vec![]));
        assert_eq!(signed_sub(true, &[5], true, &[5]), (false, vec![]));
        assert_eq!(signed_mul(true, &[5], false, &[]), (false, vec![]));
        // A negative flag on an empty magnitude is treated as zero.
        assert_eq!(signed_cmp(true, &[], false, &[]), Ordering::Equal);
        assert_eq!(signed_cmp(true, &[], true, &[1]), Ordering::Greater);
    }

    #[test]
    fn digit_boundaries_and_carries() {
        assert_eq!(from_u128(u128::from(MASK)), vec![MASK]);
        assert_eq!(from_u128(1 << 30), vec![0, 1]);
        assert_eq!(add(&[MASK], &[1]), vec![0, 1]);
        assert_eq!(add(&[MASK, MASK, MASK], &[1]), vec![0, 0, 0, 1]);
        assert_eq!(add(&[1], &[MASK, MASK, MASK]), vec![0, 0, 0, 1]);
        assert_eq!(sub(&[0, 0, 0, 1], &[1]), vec![MASK, MASK, MASK]);
        assert_eq!(sub(&[0, 1], &[MASK]), vec![1]);
        assert_eq!(sub(&[0, 1], &[1]), vec![MASK]);
        // (2^90 - 1)^2 = 2^180 - 2^91 + 1.
        let m = vec![MASK; 3];
        let sq = mul(&m, &m);
        let expected = add(&sub(&pow(2, 180), &pow(2, 91)), &[1]);
        assert_eq!(sq, expected);
        assert_eq!(mul(&[MASK], &[MASK]), from_u128(u128::from(MASK).pow(2)));
        assert_eq!(bit_length(&[MASK]), 30);
        assert_eq!(bit_length(&[0, 1]), 31);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(cmp(&[MASK], &[0, 1]), Ordering::Less);
        assert_eq!(cmp(&[0, 2], &[MASK, 1]), Ordering::Greater);
        assert_eq!(divmod_small(&[0, 1], MASK), (vec![1], 1));
        assert_eq!(divmod_small(&[5, 7], 1), (vec![5, 7], 0));
        assert_eq!(to_decimal(&[0, 1]), "1073741824");
        assert_eq!(to_decimal(&[MASK]), "1073741823");
        assert_eq!(to_decimal(&from_u128(1_000_000_000)), "1000000000");
        assert_eq!(to_decimal(&from_u128(999_999_999)), "999999999");
    }

    #[test]
    fn u128_and_i128_limits() {
        assert_eq!(to_u128(&from_u128(u128::MAX)), Some(u128::MAX));
        assert_eq!(bit_length(&from_u128(u128::MAX)), 128);
        assert_eq!(to_u128(&add(&from_u128(u128::MAX), &[1])), None);
        assert_eq!(to_u128(&pow(2, 128)), None);
        assert_eq!(to_u128(&pow(2, 127)), Some(1 << 127));
        for x in [i128::MIN, i128::MIN + 1, -1, 0, 1, i128::MAX - 1, i128::MAX] {
            let (n, m) = from_i128(x);
            assert_eq!(to_i128(n, &m), Some(x));
            assert_eq!(to_decimal(&m), x.unsigned_abs().to_string());
        }
        let two127 = pow(2, 127);
        assert_eq!(to_i128(true, &two127), Some(i128::MIN));
        assert_eq!(to_i128(false, &two127), None);
        assert_eq!(to_i128(true, &add(&two127, &[1])), None);
        assert_eq!(
            to_decimal(&from_u128(u128::MAX)),
            "340282366920938463463374607431768211455"
        );
    }

    #[test]
    fn random_i128_arithmetic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let x = rng.i128();
            let y = rng.i128();
            let (xn, xm) = from_i128(x);
            let (yn, ym) = from_i128(y);
            assert!(is_normalized(&xm));
            assert_eq!(to_i128(xn, &xm), Some(x));
            if let Some(s) = x.checked_add(y) {
                check_signed(signed_add(xn, &xm, yn, &ym), s);
            }
            if let Some(d) = x.checked_sub(y) {
                check_signed(signed_sub(xn, &xm, yn, &ym), d);
            }
            if let Some(p) = x.checked_mul(y) {
                check_signed(signed_mul(xn, &xm, yn, &ym), p);
            }
            // Shrink to make products fit more often.
            let xs = x >> rng.below(128);
            let ys = y >> rng.below(128);
            if let Some(p) = xs.checked_mul(ys) {
                let (a, am) = from_i128(xs);
                let (b, bm) = from_i128(ys);
                check_signed(signed_mul(a, &am, b, &bm), p);
            }
            assert_eq!(signed_cmp(xn, &xm, yn, &ym), x.cmp(&y));
            assert_eq!(cmp(&xm, &ym), x.unsigned_abs().cmp(&y.unsigned_abs()));

            let (ux, uy) = (x.unsigned_abs(), y.unsigned_abs());
            if let Some(s) = ux.checked_add(uy) {
                assert_eq!(add(&xm, &ym), from_u128(s));
            } else {
                assert_eq!(to_u128(&add(&xm, &ym)), None);
            }
            let (hi, lo) = if ux >= uy { (ux, uy) } else { (uy, ux) };
            assert_eq!(sub(&from_u128(hi), &from_u128(lo)), from_u128(hi - lo));
            match ux.checked_mul(uy) {
                Some(p) => assert_eq!(mul(&xm, &ym), from_u128(p)),
                None => assert_eq!(to_u128(&mul(&xm, &ym)), None),
            }

            assert_eq!(to_decimal(&xm), ux.to_string());
            assert_eq!(parse_decimal(&ux.to_string()), Some(xm.clone()));
            assert_eq!(bit_length(&xm), u64::from(128 - ux.leading_zeros()));

            let d = match rng.below(3) {
                0 => MASK,
                1 => 10,
                _ => (rng.next_u64() as u32 & MASK).max(1),
            };
            let (q, r) = divmod_small(&xm, d);
            assert!(is_normalized(&q));
            assert_eq!(to_u128(&q), Some(ux / u128::from(d)));
            assert_eq!(u128::from(r), ux % u128::from(d));
        }
    }

    #[test]
    fn decimal_known_values() {
        assert_eq!(to_decimal(&pow(2, 100)), "1267650600228229401496703205376");
        assert_eq!(
            to_decimal(&pow(10, 40)),
            "10000000000000000000000000000000000000000"
        );
        let fact = |n: u32| (1..=n).fold(from_u128(1), |acc, k| mul(&acc, &[k]));
        assert_eq!(to_decimal(&fact(30)), "265252859812191058636308480000000");
        assert_eq!(
            to_decimal(&fact(50)),
            "30414093201713378043612608166064768844377641568960512000000000000"
        );
        let three200 = "265613988875874769338781322035779626829233452653394495974574961739092490901302182994384699044001";
        assert_eq!(to_decimal(&pow(3, 200)), three200);
        assert_eq!(parse_decimal(three200), Some(pow(3, 200)));
        assert_eq!(
            parse_decimal("1267650600228229401496703205376"),
            Some(pow(2, 100))
        );
        assert_eq!(
            parse_decimal("0000001267650600228229401496703205376"),
            Some(pow(2, 100))
        );
        assert_eq!(bit_length(&pow(2, 100)), 101);
        assert_eq!(bit_length(&sub(&pow(2, 100), &[1])), 100);
    }

    #[test]
    fn parse_rejects_invalid() {
        for s in ["", "-1", "+1", " 1", "1 ", "1_000", "12a", "0x10", "١٢"] {
            assert_eq!(parse_decimal(s), None, "{s:?}");
        }
    }

    #[test]
    fn random_big_identities() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..1_500 {
            let x = rng.mag(25);
            let y = rng.mag(25);
            let (a, b) = if cmp(&x, &y) == Ordering::Less {
                (y, x)
            } else {
                (x, y)
            };
            let sum = add(&a, &b);
            let diff = sub(&a, &b);
            assert!(is_normalized(&sum) && is_normalized(&diff));
            assert_eq!(sub(&sum, &b), a);
            assert_eq!(add(&diff, &b), a);
            assert_eq!(add(&a, &b), add(&b, &a));
            // (a+b)(a-b) == a^2 - b^2
            let lhs = mul(&sum, &diff);
            let rhs = sub(&mul(&a, &a), &mul(&b, &b));
            assert!(is_normalized(&lhs));
            assert_eq!(lhs, rhs);
            assert_eq!(mul(&a, &b), mul(&b, &a));
            // Distributivity: a*(b+1) == a*b + a
            assert_eq!(mul(&a, &add(&b, &[1])), add(&mul(&a, &b), &a));
            assert_eq!(
                cmp(&sum, &a),
                if b.is_empty() {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            );
            // Decimal round trip.
            let s = to_decimal(&a);
            assert!(s == "0" || !s.starts_with('0'));
            assert_eq!(parse_decimal(&s), Some(a.clone()));
            // Division by a small digit: q*d + r == a.
            let d = (rng.next_u64() as u32 & MASK).max(1);
            let (q, r) = divmod_small(&a, d);
            assert!(r < d);
            assert_eq!(
                add(
                    &mul(&q, &from_u128(u128::from(d))),
                    &from_u128(u128::from(r))
                ),
                a
            );
            // bit_length brackets the value.
            let bl = bit_length(&a);
            if bl > 0 {
                let bl = u32::try_from(bl).expect("small");
                assert_ne!(cmp(&a, &pow(2, bl - 1)), Ordering::Less);
                assert_eq!(cmp(&a, &pow(2, bl)), Ordering::Less);
            }
            // Signed helpers agree with magnitude ops.
            assert_eq!(signed_add(true, &a, false, &b), signed(true, diff.clone()));
            assert_eq!(signed_sub(false, &b, false, &a), signed(true, diff.clone()));
            assert_eq!(signed_sub(true, &a, false, &b), signed(true, sum.clone()));
            assert_eq!(signed_mul(true, &a, true, &b), (false, mul(&a, &b)));
            assert_eq!(
                signed_cmp(true, &a, true, &b),
                cmp(&b, &a),
                "negatives compare reversed"
            );
        }
    }
}
