//! The scaffolding every optimizer shares: its parameter groups, one slot per
//! parameter holding that parameter's state, the step count, and the loops of
//! `step`, `state_dict` and `load_state_dict` around the per-parameter work,
//! which is all that differs between SGD and Adam.

use super::{check_state_names, fmt_f64, make_slots, slot_grad, OptimizerState, ParamGroup, Slot};
use crate::{GradStore, Result, Tensor};

/// The groups, the per-parameter slots and the number of steps taken.
pub(crate) struct Slots<S> {
    pub groups: Vec<ParamGroup>,
    pub slots: Vec<Slot<S>>,
    pub steps: u64,
}

impl<S> Slots<S> {
    /// One slot per parameter of `groups` (a parameter in two groups is an error naming `op`).
    pub fn new(op: &'static str, groups: Vec<ParamGroup>) -> Result<Self> {
        let slots = make_slots(op, &groups)?;
        Ok(Slots { groups, slots, steps: 0 })
    }

    /// One optimizer step: `update(name, param, grad, state, group)` for every
    /// parameter with a gradient in `grads` (the others keep their state, as
    /// in PyTorch when `p.grad is None`), then the step is counted.
    pub fn step(
        &mut self,
        op: &'static str,
        grads: &GradStore,
        mut update: impl FnMut(&str, &Tensor, &Tensor, &mut Option<S>, &ParamGroup) -> Result<()>,
    ) -> Result<()> {
        for slot in &mut self.slots {
            let Some((t, g)) = slot_grad(op, &slot.name, &slot.param, grads)? else {
                continue;
            };
            update(&slot.name, &t, &g, &mut slot.state, &self.groups[slot.group])?;
        }
        self.steps += 1;
        Ok(())
    }

    /// A state dict: the optimizer's `name`, the step count, `lr` and the
    /// other settings in `settings`, then `save(name, state, param dims, dict)`
    /// for every parameter that has state.
    pub fn state_dict(
        &self,
        name: &str,
        lr: f64,
        settings: &[(&str, String)],
        mut save: impl FnMut(&str, &S, &[usize], &mut OptimizerState) -> Result<()>,
    ) -> Result<OptimizerState> {
        let mut st = OptimizerState::default();
        st.metadata.insert("optimizer".into(), name.into());
        st.metadata.insert("step".into(), self.steps.to_string());
        st.metadata.insert("lr".into(), fmt_f64(lr));
        for (key, value) in settings {
            st.metadata.insert((*key).into(), value.clone());
        }
        for slot in &self.slots {
            if let Some(s) = &slot.state {
                save(&slot.name, s, &slot.param.dims(), &mut st)?;
            }
        }
        Ok(st)
    }

    /// The first half of loading: `state` was saved by an optimizer of kind
    /// `name` over these parameters. Returns its step count and learning rate.
    pub fn check_state(&self, op: &'static str, name: &str, state: &OptimizerState) -> Result<(u64, f64)> {
        check_state_names(op, state, &self.slots, name)?;
        Ok((state.meta_u64(op, "step")?, state.meta_f64(op, "lr")?))
    }

    /// The second half: `load(name, param)` converts every parameter's state
    /// first; only when all succeeded are they (and the step count) replaced,
    /// so a failed load leaves the optimizer as it was.
    pub fn replace_states(&mut self, steps: u64, mut load: impl FnMut(&str, &Tensor) -> Result<Option<S>>) -> Result<()> {
        let loaded = self
            .slots
            .iter()
            .map(|slot| load(&slot.name, &slot.param.tensor()))
            .collect::<Result<Vec<_>>>()?;
        for (slot, s) in self.slots.iter_mut().zip(loaded) {
            slot.state = s;
        }
        self.steps = steps;
        Ok(())
    }
}
