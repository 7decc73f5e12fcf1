//! The proptest configuration every property test in tamer uses.
//!
//! `ProptestConfig::with_cases(n)` ignores `PROPTEST_CASES`, so a long run
//! could not raise the case counts written in the tests. [`proptest_config`]
//! takes the test's own count as a default that the environment overrides,
//! and makes every run replayable: the run's seed is `PROPTEST_RNG_SEED` when
//! set (CI pins it) or a fresh random one, and a failing test prints it.

use proptest::test_runner::{Config as ProptestConfig, FailurePersistence, PersistedSeed, RngSeed};
use std::any::Any;
use std::fmt;

/// A proptest configuration running `default_cases` cases, or `PROPTEST_CASES`
/// when that variable is set; every other setting comes from proptest's own
/// `PROPTEST_*` variables (`PROPTEST_RNG_SEED`, `PROPTEST_MAX_SHRINK_ITERS`, ...).
///
/// The run's seed is always a fixed number (a random one when
/// `PROPTEST_RNG_SEED` is unset), and a failure prints a line such as
/// `proptest: this run's seed: PROPTEST_RNG_SEED=1234` next to proptest's own
/// report, so the same cases can be generated again.
///
/// # Panics
///
/// When `PROPTEST_CASES` is set but is not a number: a test run asked for
/// something it cannot do, and quietly running the default count would hide it.
pub fn proptest_config(default_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        cases: cases_from(std::env::var("PROPTEST_CASES").ok().as_deref(), default_cases),
        ..ProptestConfig::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(rand::random());
    }
    let inner = config.failure_persistence.take();
    config.failure_persistence = Some(Box::new(PrintSeedOnFailure { inner, seed: config.rng_seed }));
    config
}

/// The case count: the variable's value when given, else the test's default.
fn cases_from(variable: Option<&str>, default_cases: u32) -> u32 {
    match variable {
        None => default_cases,
        Some(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PROPTEST_CASES={text:?} is not a number of cases (expected a non-negative integer)")),
    }
}

/// Proptest's failure persistence (the regression files), wrapped so that a
/// failure also prints the run's seed. Proptest itself prints only the failing
/// case's own seed, and only when it can write the regression file.
#[derive(Clone)]
struct PrintSeedOnFailure {
    inner: Option<Box<dyn FailurePersistence>>,
    seed: RngSeed,
}

impl fmt::Debug for PrintSeedOnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrintSeedOnFailure(seed {}, {:?})", self.seed, self.inner)
    }
}

impl FailurePersistence for PrintSeedOnFailure {
    fn load_persisted_failures2(&self, source_file: Option<&'static str>) -> Vec<PersistedSeed> {
        self.inner.as_ref().map_or_else(Vec::new, |p| p.load_persisted_failures2(source_file))
    }

    fn save_persisted_failure2(&mut self, source_file: Option<&'static str>, seed: PersistedSeed, shrunken_value: &dyn fmt::Debug) {
        eprintln!(
            "proptest: this run's seed: PROPTEST_RNG_SEED={} (run the test again with it, and at least as many PROPTEST_CASES, to replay)",
            self.seed
        );
        if let Some(p) = &mut self.inner {
            p.save_persisted_failure2(source_file, seed, shrunken_value);
        }
    }

    fn box_clone(&self) -> Box<dyn FailurePersistence> {
        Box::new(self.clone())
    }

    fn eq(&self, other: &dyn FailurePersistence) -> bool {
        other.as_any().downcast_ref::<Self>().is_some_and(|o| {
            o.seed == self.seed
                && match (&self.inner, &o.inner) {
                    (Some(a), Some(b)) => a.as_ref() == b.as_ref(),
                    (None, None) => true,
                    _ => false,
                }
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{TestCaseError, TestRunner};

    #[test]
    fn the_environment_overrides_the_default_case_count() {
        assert_eq!(cases_from(None, 24), 24);
        assert_eq!(cases_from(Some("1000"), 24), 1000);
        assert_eq!(cases_from(Some(" 7 "), 24), 7);
        let bad = std::panic::catch_unwind(|| cases_from(Some("many"), 24)).unwrap_err();
        let message = bad.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("PROPTEST_CASES=\"many\""), "{message}");
    }

    #[test]
    fn the_seed_is_fixed_and_a_fixed_seed_replays_the_same_cases() {
        let config = proptest_config(5);
        let RngSeed::Fixed(seed) = config.rng_seed else {
            panic!("expected a fixed seed, got {}", config.rng_seed);
        };
        let draw = |seed: u64| {
            let mut config = proptest_config(5);
            config.rng_seed = RngSeed::Fixed(seed);
            config.failure_persistence = None;
            let mut runner = TestRunner::new(config);
            let seen = std::cell::RefCell::new(Vec::new());
            runner
                .run(&any::<u64>(), |v| {
                    seen.borrow_mut().push(v);
                    Ok(())
                })
                .unwrap();
            seen.into_inner()
        };
        assert_eq!(draw(seed), draw(seed));
        assert_ne!(draw(seed), draw(seed.wrapping_add(1)));
    }

    #[test]
    fn a_failure_still_reaches_the_regression_file_persistence() {
        // The wrapper forwards saves; a recording persistence stands in for the file.
        #[derive(Clone, Debug, Default)]
        struct Recorder(std::sync::Arc<std::sync::Mutex<usize>>);
        impl FailurePersistence for Recorder {
            fn load_persisted_failures2(&self, _: Option<&'static str>) -> Vec<PersistedSeed> {
                Vec::new()
            }
            fn save_persisted_failure2(&mut self, _: Option<&'static str>, _: PersistedSeed, _: &dyn fmt::Debug) {
                *self.0.lock().unwrap() += 1;
            }
            fn box_clone(&self) -> Box<dyn FailurePersistence> {
                Box::new(self.clone())
            }
            fn eq(&self, _: &dyn FailurePersistence) -> bool {
                false
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
        let saves = Recorder::default();
        let mut config = proptest_config(50);
        config.failure_persistence = Some(Box::new(PrintSeedOnFailure {
            inner: Some(Box::new(saves.clone())),
            seed: config.rng_seed,
        }));
        let mut runner = TestRunner::new(config);
        let result = runner.run(&(0..100u32), |v| if v > 10 { Err(TestCaseError::fail("too big")) } else { Ok(()) });
        assert!(result.is_err());
        assert_eq!(*saves.0.lock().unwrap(), 1);
    }
}
