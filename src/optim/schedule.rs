//! Learning-rate schedules.
//!
//! A schedule is a pure function of the step: [`LrSchedule::lr_at`]`(s)` is
//! the learning rate of optimizer step `s`, counting from 0 (the first step).
//! A [`Scheduler`] holds the step counter and sets an optimizer's learning
//! rate (and momentum, for schedules that cycle it) before each step; its
//! state is that counter alone, so resuming a run restores it exactly.
//!
//! ```
//! use tamer::optim::{LrSchedule, OneCycle, WarmupCosine};
//! // nanoGPT's get_lr: warmup to 1e-3 over 10 steps, cosine to 1e-4 at step 100.
//! let s = WarmupCosine::new(1e-3, 10, 100, 1e-4).unwrap();
//! assert_eq!(s.lr_at(0), 1e-3 / 11.0);
//! assert!((s.lr_at(10) - 1e-3).abs() < 1e-18);
//! assert!((s.lr_at(100) - 1e-4).abs() < 1e-18 && s.lr_at(5000) == 1e-4);
//! // PyTorch's OneCycleLR: from max_lr/25 up to max_lr over 30% of the steps, then down to max_lr/25/1e4.
//! let oc = OneCycle::new(0.1, 100).unwrap();
//! assert!((oc.lr_at(0) - 0.004).abs() < 1e-15);
//! assert!((oc.lr_at(29) - 0.1).abs() < 1e-15);
//! ```

use super::Optimizer;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::f64::consts::PI;

/// The learning rate (and optionally momentum) as a function of the step.
pub trait LrSchedule: Send + Sync {
    /// The learning rate of optimizer step `step` (0 = the first step).
    fn lr_at(&self, step: u64) -> f64;
    /// SGD's momentum or Adam's β₁ at `step`, for schedules that cycle it.
    fn momentum_at(&self, _step: u64) -> Option<f64> {
        None
    }
    /// A one-line description (for logs and checkpoint metadata).
    fn describe(&self) -> String;
}

fn check(op: &'static str, what: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::value(op, format!("{what} = {v} must be finite and >= 0")));
    }
    Ok(())
}

/// nanoGPT's warmup: `peak · (s + 1) / (warmup + 1)` for `s < warmup`, so the
/// first step already learns (lr 0 would waste it) and step `warmup` reaches the peak.
fn warmup(peak: f64, step: u64, warmup: u64) -> f64 {
    peak * (step + 1) as f64 / (warmup + 1) as f64
}

/// The same learning rate at every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constant {
    pub lr: f64,
}

impl LrSchedule for Constant {
    fn lr_at(&self, _step: u64) -> f64 {
        self.lr
    }
    fn describe(&self) -> String {
        format!("constant(lr={})", self.lr)
    }
}

/// Linear warmup to `peak_lr` over `warmup_steps` (nanoGPT's form:
/// `peak · (s + 1)/(warmup + 1)`), then linear decay reaching `final_lr` at
/// `total_steps` and staying there:
/// `final + (peak − final) · (total − s)/(total − warmup)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupLinear {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub final_lr: f64,
}

impl WarmupLinear {
    /// ```
    /// use tamer::optim::{LrSchedule, WarmupLinear};
    /// let s = WarmupLinear::new(1.0, 4, 14, 0.0).unwrap();
    /// assert_eq!([s.lr_at(0), s.lr_at(3), s.lr_at(4), s.lr_at(9), s.lr_at(14), s.lr_at(99)], [0.2, 0.8, 1.0, 0.5, 0.0, 0.0]);
    /// ```
    pub fn new(peak_lr: f64, warmup_steps: u64, total_steps: u64, final_lr: f64) -> Result<WarmupLinear> {
        const OP: &str = "WarmupLinear::new";
        check(OP, "peak_lr", peak_lr)?;
        check(OP, "final_lr", final_lr)?;
        if total_steps < warmup_steps {
            return Err(Error::value(
                OP,
                format!("total_steps {total_steps} is shorter than warmup_steps {warmup_steps}"),
            ));
        }
        Ok(WarmupLinear {
            peak_lr,
            warmup_steps,
            total_steps,
            final_lr,
        })
    }
}

impl LrSchedule for WarmupLinear {
    fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return warmup(self.peak_lr, step, self.warmup_steps);
        }
        if step >= self.total_steps {
            return self.final_lr;
        }
        let frac = (self.total_steps - step) as f64 / (self.total_steps - self.warmup_steps) as f64;
        self.final_lr + (self.peak_lr - self.final_lr) * frac
    }
    fn describe(&self) -> String {
        format!(
            "warmup_linear(peak={}, warmup={}, total={}, final={})",
            self.peak_lr, self.warmup_steps, self.total_steps, self.final_lr
        )
    }
}

/// nanoGPT's `get_lr`: linear warmup to `peak_lr` over `warmup_steps`, cosine
/// decay to `min_lr` at `decay_steps` (`lr_decay_iters`), then `min_lr`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub decay_steps: u64,
    pub min_lr: f64,
}

impl WarmupCosine {
    pub fn new(peak_lr: f64, warmup_steps: u64, decay_steps: u64, min_lr: f64) -> Result<WarmupCosine> {
        const OP: &str = "WarmupCosine::new";
        check(OP, "peak_lr", peak_lr)?;
        check(OP, "min_lr", min_lr)?;
        if decay_steps < warmup_steps {
            return Err(Error::value(
                OP,
                format!("decay_steps {decay_steps} is shorter than warmup_steps {warmup_steps}"),
            ));
        }
        Ok(WarmupCosine {
            peak_lr,
            warmup_steps,
            decay_steps,
            min_lr,
        })
    }
}

impl LrSchedule for WarmupCosine {
    fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return warmup(self.peak_lr, step, self.warmup_steps);
        }
        if step >= self.decay_steps {
            return self.min_lr;
        }
        let decay_ratio = (step - self.warmup_steps) as f64 / (self.decay_steps - self.warmup_steps) as f64;
        let coeff = 0.5 * (1.0 + (PI * decay_ratio).cos());
        self.min_lr + coeff * (self.peak_lr - self.min_lr)
    }
    fn describe(&self) -> String {
        format!(
            "warmup_cosine(peak={}, warmup={}, decay={}, min={})",
            self.peak_lr, self.warmup_steps, self.decay_steps, self.min_lr
        )
    }
}

/// How [`OneCycle`] interpolates within a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Anneal {
    #[default]
    Cos,
    Linear,
}

impl Anneal {
    fn apply(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// PyTorch's `OneCycleLR`. The learning rate rises from `max_lr/div_factor`
/// to `max_lr` until step `pct_start·total − 1`, then falls to
/// `max_lr/div_factor/final_div_factor` at step `total − 1`; with
/// `three_phase` it first falls back to the initial rate by step
/// `2·pct_start·total − 2` and only then to the minimum. With momentum
/// cycling the momentum (β₁ for Adam) moves the opposite way between
/// `max_momentum` and `base_momentum`. Steps past `total − 1` keep the last
/// step's values (PyTorch raises an error there).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    pub max_lr: f64,
    pub total_steps: u64,
    pub pct_start: f64,
    pub div_factor: f64,
    pub final_div_factor: f64,
    pub anneal: Anneal,
    pub three_phase: bool,
    /// `Some((base_momentum, max_momentum))` to cycle momentum; PyTorch's
    /// default is on with (0.85, 0.95).
    pub momentum: Option<(f64, f64)>,
}

struct Phase {
    end_step: f64,
    lr: (f64, f64),
    momentum: (f64, f64),
}

impl OneCycle {
    /// PyTorch's defaults: pct_start 0.3, div_factor 25, final_div_factor 1e4,
    /// cosine annealing, two phases, momentum cycling between 0.85 and 0.95.
    pub fn new(max_lr: f64, total_steps: u64) -> Result<OneCycle> {
        OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Anneal::Cos,
            three_phase: false,
            momentum: Some((0.85, 0.95)),
        }
        .validated()
    }
    pub fn pct_start(self, pct_start: f64) -> Result<Self> {
        OneCycle { pct_start, ..self }.validated()
    }
    pub fn div_factors(self, div_factor: f64, final_div_factor: f64) -> Result<Self> {
        OneCycle {
            div_factor,
            final_div_factor,
            ..self
        }
        .validated()
    }
    pub fn anneal(self, anneal: Anneal) -> Self {
        OneCycle { anneal, ..self }
    }
    pub fn three_phase(self, three_phase: bool) -> Self {
        OneCycle { three_phase, ..self }
    }
    /// Cycle momentum between `base` and `max`, or (None) leave it alone.
    pub fn momentum(self, momentum: Option<(f64, f64)>) -> Result<Self> {
        OneCycle { momentum, ..self }.validated()
    }

    fn validated(self) -> Result<OneCycle> {
        const OP: &str = "OneCycle";
        check(OP, "max_lr", self.max_lr)?;
        if self.total_steps == 0 {
            return Err(Error::value(OP, "total_steps must be positive"));
        }
        if !(0.0..=1.0).contains(&self.pct_start) {
            return Err(Error::value(OP, format!("pct_start {} is outside [0, 1]", self.pct_start)));
        }
        for (what, v) in [("div_factor", self.div_factor), ("final_div_factor", self.final_div_factor)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::value(OP, format!("{what} = {v} must be finite and > 0")));
            }
        }
        if let Some((base, max)) = self.momentum {
            for (what, v) in [("base_momentum", base), ("max_momentum", max)] {
                check(OP, what, v)?;
            }
        }
        Ok(self)
    }

    fn phases(&self) -> Vec<Phase> {
        let initial_lr = self.max_lr / self.div_factor;
        let min_lr = initial_lr / self.final_div_factor;
        let (base_m, max_m) = self.momentum.unwrap_or((0.0, 0.0));
        let total = self.total_steps as f64;
        let p1 = self.pct_start * total - 1.0;
        if self.three_phase {
            vec![
                Phase {
                    end_step: p1,
                    lr: (initial_lr, self.max_lr),
                    momentum: (max_m, base_m),
                },
                Phase {
                    end_step: 2.0 * self.pct_start * total - 2.0,
                    lr: (self.max_lr, initial_lr),
                    momentum: (base_m, max_m),
                },
                Phase {
                    end_step: total - 1.0,
                    lr: (initial_lr, min_lr),
                    momentum: (max_m, max_m),
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: p1,
                    lr: (initial_lr, self.max_lr),
                    momentum: (max_m, base_m),
                },
                Phase {
                    end_step: total - 1.0,
                    lr: (self.max_lr, min_lr),
                    momentum: (base_m, max_m),
                },
            ]
        }
    }

    /// (lr, momentum) at `step`, following OneCycleLR.get_lr.
    fn values(&self, step: u64) -> (f64, f64) {
        let step = step.min(self.total_steps - 1) as f64;
        let phases = self.phases();
        let mut start_step = 0.0;
        for (i, phase) in phases.iter().enumerate() {
            if step <= phase.end_step || i == phases.len() - 1 {
                let span = phase.end_step - start_step;
                // A phase of zero length (pct_start·total = 1) would divide 0 by 0; it ends where it starts.
                let pct = if span == 0.0 { 1.0 } else { (step - start_step) / span };
                return (
                    self.anneal.apply(phase.lr.0, phase.lr.1, pct),
                    self.anneal.apply(phase.momentum.0, phase.momentum.1, pct),
                );
            }
            start_step = phase.end_step;
        }
        (self.max_lr, 0.0)
    }
}

impl LrSchedule for OneCycle {
    fn lr_at(&self, step: u64) -> f64 {
        self.values(step).0
    }
    fn momentum_at(&self, step: u64) -> Option<f64> {
        self.momentum.map(|_| self.values(step).1)
    }
    fn describe(&self) -> String {
        format!(
            "one_cycle(max_lr={}, total={}, pct_start={}, div={}, final_div={}, anneal={:?}, three_phase={}, momentum={:?})",
            self.max_lr, self.total_steps, self.pct_start, self.div_factor, self.final_div_factor, self.anneal, self.three_phase, self.momentum
        )
    }
}

/// fairseq's `inverse_sqrt`: linear warmup from `warmup_init_lr` to `peak_lr`
/// over `warmup_steps`, then `peak_lr · sqrt(warmup_steps / s)`. Without
/// warmup, `peak_lr / sqrt(max(s, 1))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InverseSqrt {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub warmup_init_lr: f64,
}

impl InverseSqrt {
    /// ```
    /// use tamer::optim::{InverseSqrt, LrSchedule};
    /// let s = InverseSqrt::new(1e-3, 100, 0.0).unwrap();
    /// assert_eq!(s.lr_at(0), 0.0);
    /// assert!((s.lr_at(50) - 5e-4).abs() < 1e-18);
    /// assert!((s.lr_at(400) - 5e-4).abs() < 1e-18); // 1e-3 · sqrt(100/400)
    /// ```
    pub fn new(peak_lr: f64, warmup_steps: u64, warmup_init_lr: f64) -> Result<InverseSqrt> {
        check("InverseSqrt::new", "peak_lr", peak_lr)?;
        check("InverseSqrt::new", "warmup_init_lr", warmup_init_lr)?;
        Ok(InverseSqrt {
            peak_lr,
            warmup_steps,
            warmup_init_lr,
        })
    }
}

impl LrSchedule for InverseSqrt {
    fn lr_at(&self, step: u64) -> f64 {
        if self.warmup_steps == 0 {
            return self.peak_lr / (step.max(1) as f64).sqrt();
        }
        let w = self.warmup_steps as f64;
        if step < self.warmup_steps {
            let lr_step = (self.peak_lr - self.warmup_init_lr) / w;
            return self.warmup_init_lr + step as f64 * lr_step;
        }
        let decay_factor = self.peak_lr * w.sqrt();
        decay_factor * (step as f64).powf(-0.5)
    }
    fn describe(&self) -> String {
        format!(
            "inverse_sqrt(peak={}, warmup={}, init={})",
            self.peak_lr, self.warmup_steps, self.warmup_init_lr
        )
    }
}

/// Drives an optimizer through a schedule. Each training step:
///
/// ```text
/// sched.apply(&mut opt)?;   // lr (and momentum) for this step
/// opt.step(&grads)?;
/// sched.advance();
/// ```
pub struct Scheduler {
    schedule: Box<dyn LrSchedule>,
    step: u64,
}

impl Scheduler {
    pub fn new(schedule: impl LrSchedule + 'static) -> Scheduler {
        Scheduler {
            schedule: Box::new(schedule),
            step: 0,
        }
    }
    pub fn from_box(schedule: Box<dyn LrSchedule>) -> Scheduler {
        Scheduler { schedule, step: 0 }
    }
    /// The step the next [`Scheduler::apply`] is for.
    pub fn step(&self) -> u64 {
        self.step
    }
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }
    /// The learning rate of the current step.
    pub fn lr(&self) -> f64 {
        self.schedule.lr_at(self.step)
    }
    pub fn schedule(&self) -> &dyn LrSchedule {
        self.schedule.as_ref()
    }
    /// Set `opt`'s learning rate (and momentum, when the schedule cycles it)
    /// for the current step; returns the learning rate.
    pub fn apply<O: Optimizer + ?Sized>(&self, opt: &mut O) -> Result<f64> {
        let lr = self.lr();
        opt.set_lr(lr);
        if let Some(m) = self.schedule.momentum_at(self.step) {
            opt.set_momentum(m)?;
        }
        Ok(lr)
    }
    /// Move on to the next step.
    pub fn advance(&mut self) {
        self.step += 1;
    }
    /// The state to checkpoint: the step, and the schedule's description
    /// (checked on load so a resumed run does not switch schedules silently).
    pub fn state_dict(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("schedule.step".to_string(), self.step.to_string()),
            ("schedule.kind".to_string(), self.schedule.describe()),
        ])
    }
    pub fn load_state_dict(&mut self, state: &BTreeMap<String, String>) -> Result<()> {
        const OP: &str = "Scheduler::load_state_dict";
        let step = state.get("schedule.step").ok_or_else(|| Error::value(OP, "no 'schedule.step' entry"))?;
        let step = step
            .parse::<u64>()
            .map_err(|_| Error::value(OP, format!("'schedule.step' = '{step}' is not a step count")))?;
        if let Some(kind) = state.get("schedule.kind") {
            let mine = self.schedule.describe();
            if *kind != mine {
                return Err(Error::value(OP, format!("the state is for schedule {kind}, this scheduler runs {mine}")));
            }
        }
        self.step = step;
        Ok(())
    }
}
