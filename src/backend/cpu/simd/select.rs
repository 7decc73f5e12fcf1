//! Which instruction set the kernels run with: the widest this CPU supports,
//! or the one the `TAMER_SIMD` environment variable names.
//!
//! A machine runs only the ISA it picks, so the kernels of the others would
//! be tested only where `tests.rs` calls them directly. `TAMER_SIMD=scalar`,
//! `avx2` or `avx512` makes a whole test run (CI runs the f32 kernel and
//! PyTorch-fixture tests once per ISA the machine has) go through that ISA.
//!
//! The variable is read once per process. It never falls back silently: a
//! value that names no ISA, or an ISA this CPU lacks, makes every kernel that
//! has SIMD paths return an error (`ErrorKind::Device`, naming the op, the
//! value and what the CPU has) instead of running a different ISA than the
//! one asked for. Unset or empty means the widest supported ISA.

use super::{supported, table, Isa, Simd};
use std::sync::OnceLock;

/// The environment variable that overrides the detected ISA.
pub const VARIABLE: &str = "TAMER_SIMD";

/// The ISAs in order of preference, widest first.
const WIDEST_FIRST: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Scalar];

/// The ISA the kernels should run with for the value of [`VARIABLE`]
/// (`None` when unset), on a CPU that supports the ISAs `supported` accepts;
/// or why that cannot be.
pub(super) fn choose(value: Option<&str>, supported: impl Fn(Isa) -> bool) -> Result<Isa, String> {
    let widest = || WIDEST_FIRST.into_iter().find(|&i| supported(i)).unwrap_or(Isa::Scalar);
    let value = match value.map(str::trim) {
        None | Some("") => return Ok(widest()),
        Some(v) => v,
    };
    let names: Vec<&str> = WIDEST_FIRST.iter().rev().map(|i| i.name()).collect();
    let Some(isa) = WIDEST_FIRST.into_iter().find(|i| i.name() == value) else {
        return Err(format!(
            "{VARIABLE}={value:?} names no instruction set tamer has kernels for; expected one of {} (or unset for the widest this CPU supports)",
            names.join(", ")
        ));
    };
    if supported(isa) {
        return Ok(isa);
    }
    let has: Vec<&str> = WIDEST_FIRST.iter().rev().filter(|&&i| supported(i)).map(|i| i.name()).collect();
    Err(format!(
        "{VARIABLE}={value} asks for {}, which this CPU (or this build's target) lacks; it supports {}",
        isa.name(),
        has.join(", ")
    ))
}

/// The kernels chosen for this process, or the message saying why the
/// requested ISA cannot be had: decided once, at the first call.
pub(super) fn selection() -> &'static Result<Simd, String> {
    static SELECTION: OnceLock<Result<Simd, String>> = OnceLock::new();
    SELECTION.get_or_init(|| {
        let value = match std::env::var(VARIABLE) {
            Ok(v) => Some(v),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(raw)) => {
                return Err(format!("{VARIABLE}={raw:?} is not valid UTF-8; expected scalar, avx2 or avx512"));
            }
        };
        choose(value.as_deref(), supported).map(|isa| Simd { k: table(isa) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(isas: &'static [Isa]) -> impl Fn(Isa) -> bool {
        move |i| isas.contains(&i)
    }

    #[test]
    fn unset_or_empty_picks_the_widest_supported() {
        assert_eq!(choose(None, only(&[Isa::Scalar, Isa::Avx2, Isa::Avx512])), Ok(Isa::Avx512));
        assert_eq!(choose(None, only(&[Isa::Scalar, Isa::Avx2])), Ok(Isa::Avx2));
        assert_eq!(choose(Some(""), only(&[Isa::Scalar])), Ok(Isa::Scalar));
        assert_eq!(choose(Some("  "), only(&[Isa::Scalar, Isa::Avx2])), Ok(Isa::Avx2));
    }

    #[test]
    fn a_supported_isa_is_taken_as_asked() {
        let all = only(&[Isa::Scalar, Isa::Avx2, Isa::Avx512]);
        assert_eq!(choose(Some("scalar"), &all), Ok(Isa::Scalar));
        assert_eq!(choose(Some("avx2"), &all), Ok(Isa::Avx2));
        assert_eq!(choose(Some("avx512\n"), &all), Ok(Isa::Avx512));
    }

    #[test]
    fn an_unknown_name_or_a_missing_isa_is_an_error_not_a_fallback() {
        let e = choose(Some("sse4"), only(&[Isa::Scalar, Isa::Avx2])).unwrap_err();
        assert!(e.contains("TAMER_SIMD=\"sse4\"") && e.contains("scalar, avx2, avx512"), "{e}");
        let e = choose(Some("AVX2"), only(&[Isa::Scalar, Isa::Avx2])).unwrap_err();
        assert!(e.contains("\"AVX2\""), "{e}");
        let e = choose(Some("avx512"), only(&[Isa::Scalar, Isa::Avx2])).unwrap_err();
        assert!(e.contains("asks for avx512") && e.contains("it supports scalar, avx2"), "{e}");
    }
}
