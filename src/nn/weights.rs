//! Building a module from given weights: the module's parameters and buffers
//! become the given tensors themselves, by their state-dict names.

use super::{Module, Param};
use crate::{DType, Device, Error, Result, Tensor};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// Make `module`'s parameters and buffers the tensors of `weights`, matched
/// by name ([`Module::named_params`], [`Module::named_buffers`]); how the
/// models' `from_weights` constructors work.
///
/// The tensors are adopted, not copied, under [`Param::new`]'s rule: a
/// variable stays the caller's tensor (its gradients are found under it and
/// an optimizer updates it in place); any other tensor becomes a variable
/// over the same storage. So a module built from another module's tensors
/// shares their storage: pass copies (or use `checkpoint::load_into`, which
/// copies into a module's own tensors) for an independent model.
///
/// The match is strict, and everything is checked before anything changes:
/// every name present, no unknown name, each shape the module's, float
/// tensors where the module has float ones (all of one float dtype, which
/// the module then has) and every tensor on one device. A tied alias
/// ([`Module::tied_aliases`], e.g. a GPT's `lm_head.weight`) may be given
/// instead of its canonical name, or beside it with the same values. Every
/// problem is listed in one error naming `op`.
///
/// ```
/// use tamer::nn::{adopt_weights, Linear, Module};
/// use tamer::{rng, DType, Tensor};
/// let lin = Linear::new(3, 2, true, &mut rng(0)).unwrap();
/// let w = Tensor::ones([2, 3], DType::F64).unwrap().variable();
/// let b = Tensor::zeros([2], DType::F64).unwrap().variable();
/// adopt_weights("example", &lin, vec![("weight".to_string(), w.clone()), ("bias".to_string(), b)]).unwrap();
/// assert_eq!(lin.weight.tensor().id(), w.id()); // the layer's weight is `w`, now f64
/// let e = adopt_weights("example", &lin, vec![("weight".to_string(), w)]).unwrap_err();
/// assert!(e.to_string().contains("missing") && e.to_string().contains("bias"));
/// ```
pub fn adopt_weights(op: &'static str, module: &dyn Module, weights: impl IntoIterator<Item = (String, Tensor)>) -> Result<()> {
    let mut given: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut n_given = 0;
    for (name, t) in weights {
        n_given += 1;
        match given.entry(name) {
            Entry::Occupied(e) => problems.push(format!("{}: given twice", e.key())),
            Entry::Vacant(e) => {
                e.insert(t);
            }
        }
    }
    for (alias, canonical) in module.tied_aliases() {
        let Some(t) = given.remove(&alias) else { continue };
        match given.get(&canonical) {
            None => {
                given.insert(canonical, t);
            }
            Some(c) if same_values(&t, c)? => {}
            Some(_) => problems.push(format!("{alias}: differs from {canonical}, but the model ties them")),
        }
    }

    let targets: Vec<(String, Param)> = module.named_params().into_iter().chain(module.named_buffers()).collect();
    let mut plan: Vec<(&Param, Tensor)> = Vec::new();
    // Each dtype and device seen, with the first name that had it.
    let mut float_dtypes: Vec<(DType, String)> = Vec::new();
    let mut devices: Vec<(Device, String)> = Vec::new();
    for (name, param) in &targets {
        let Some(t) = given.remove(name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        let want = param.tensor();
        if t.shape() != want.shape() {
            problems.push(format!("{name}: given shape {}, the model's is {}", t.shape(), want.shape()));
        } else if t.dtype().is_float() != want.dtype().is_float() {
            problems.push(format!("{name}: given dtype {}, the model's is {}", t.dtype(), want.dtype()));
        } else {
            if t.dtype().is_float() && !float_dtypes.iter().any(|(d, _)| *d == t.dtype()) {
                float_dtypes.push((t.dtype(), name.clone()));
            }
            if !devices.iter().any(|(d, _)| *d == t.device()) {
                devices.push((t.device(), name.clone()));
            }
            plan.push((param, t));
        }
    }
    problems.extend(given.keys().map(|name| format!("{name}: not a parameter or buffer of the model")));
    if float_dtypes.len() > 1 {
        let found: Vec<String> = float_dtypes.iter().map(|(d, n)| format!("{d} (e.g. {n})")).collect();
        problems.push(format!("float tensors of several dtypes: {}; expected one", found.join(", ")));
    }
    if devices.len() > 1 {
        let found: Vec<String> = devices.iter().map(|(d, n)| format!("{d} (e.g. {n})")).collect();
        problems.push(format!("tensors on several devices: {}; expected one", found.join(", ")));
    }
    if !problems.is_empty() {
        return Err(Error::value(
            op,
            format!(
                "{} problem(s) building from {} given tensors for {} parameters and buffers; nothing was changed:\n  {}",
                problems.len(),
                n_given,
                targets.len(),
                problems.join("\n  ")
            ),
        ));
    }
    for (param, t) in plan {
        param.adopt(t);
    }
    Ok(())
}

/// Whether two tensors hold the same values (same shape, elements equal in
/// f64, NaN equal to NaN; one storage viewed the same way at no cost).
pub(crate) fn same_values(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.shape() != b.shape() {
        return Ok(false);
    }
    if a.same_storage(b) && a.layout() == b.layout() {
        return Ok(true);
    }
    let (x, y) = (a.to_f64_vec()?, b.to_f64_vec()?);
    Ok(x.iter().zip(&y).all(|(u, v)| u == v || (u.is_nan() && v.is_nan())))
}
