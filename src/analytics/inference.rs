//! Running one ONNX model on one input of a fixed shape, on either backend: tract
//! (pure Rust, built in) or ONNX Runtime (loaded at run time, `ort` feature). The
//! plate reader's models and the object detector share it.

use std::path::{Path, PathBuf};
#[cfg(feature = "analytics")]
use std::sync::Arc;

#[cfg(feature = "analytics")]
use tract_onnx::prelude::*;

/// Why a model could not be loaded. Each stage words it for its own model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// The ONNX Runtime library, not a model, is missing or cannot be loaded.
    #[cfg_attr(not(feature = "ort"), allow(dead_code))]
    #[error("onnxruntime library {library}: {reason} (deploy/fetch-onnxruntime.sh DIR puts libonnxruntime.so in DIR)")]
    Runtime { library: PathBuf, reason: String },
}

/// Why a model cannot load in a build without the `analytics` feature.
#[cfg(not(feature = "analytics"))]
pub const NO_ANALYTICS: &str =
    "this build has no on-device models (built without the `analytics` feature)";

/// A model's outputs, in its order: each one's shape and values.
pub type Outputs = Vec<(Vec<usize>, Vec<f32>)>;

/// One model, run on one NCHW input of its fixed shape.
pub trait Inference: Send + Sync {
    /// Every output, in the model's order: shape and values.
    fn run_all(&self, input: Vec<f32>) -> Result<Outputs, String>;

    /// The first output: shape and values.
    fn run(&self, input: Vec<f32>) -> Result<(Vec<usize>, Vec<f32>), String> {
        self.run_all(input)?
            .into_iter()
            .next()
            .ok_or_else(|| "the model gave no output".to_owned())
    }
}

/// The runtime that runs the models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// tract: pure Rust, built in.
    Tract,
    /// ONNX Runtime, loaded at run time from `library` (builds with the `ort`
    /// feature only); `sessions` sessions per model so that as many readers can
    /// run at once.
    Onnxruntime { library: PathBuf, sessions: usize },
}

/// tract, pure Rust: one optimised plan for the fixed input shape.
#[cfg(feature = "analytics")]
pub struct Tract {
    plan: Arc<TypedRunnableModel>,
    shape: [usize; 4],
}

#[cfg(feature = "analytics")]
impl Tract {
    pub fn load(path: &Path, shape: [usize; 4]) -> Result<Self, LoadError> {
        let err = |e: TractError| LoadError::Model {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(err)?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(err)?
            .into_typed()
            .map_err(err)?
            .into_decluttered()
            .map_err(err)?;
        fuse_hard_swish(&mut model).map_err(err)?;
        let plan = model
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok(Self { plan, shape })
    }
}

/// Rewrites `x * min(max(x + 3, 0), 6)` — hard-swish as the PP-OCR models spell
/// it in ONNX, before their division by 6 (folded into the next scale) — into
/// `hard_swish(x) * 6`: one pass over the tensor instead of two chains of
/// element-wise operations. The same function; rounding differs by about 1e-7.
/// PP-OCR's recogniser runs about 15 % faster (docs/plates.md). Returns how many
/// were rewritten.
#[cfg(feature = "analytics")]
fn fuse_hard_swish(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::binary::TypedBinOp;
    use tract_onnx::tract_core::ops::math::{Add, Max, Min, Mul};
    let mut fused = 0;
    loop {
        let mut patch = None;
        for add in model.nodes() {
            let Some(op) = add.op_as::<TypedBinOp>() else {
                continue;
            };
            if !op.0.is::<Add>() || !model.matches_single_input_const(add, 3.0) {
                continue;
            }
            let Some(&x) = add
                .inputs
                .iter()
                .find(|i| model.outlet_fact(**i).is_ok_and(|f| f.konst.is_none()))
            else {
                continue;
            };
            let Some(max) = model.find_succ_bin_with_const::<Max>(add, 0.0) else {
                continue;
            };
            let Some(min) = model.find_succ_bin_with_const::<Min>(max, 6.0) else {
                continue;
            };
            let Some(mul) = model.find_succ_bin_with_outlet::<Mul>(min, &x) else {
                continue;
            };
            // The constant 6 below is f32, as are our models.
            let fact = model.outlet_fact(x)?;
            if fact.datum_type != DatumType::F32 {
                continue;
            }
            let rank = fact.rank();
            let mut p = TypedModelPatch::new("hard-swish");
            let input = p.tap_model(model, x)?;
            let hs = p.wire_node(
                format!("{}.hard_swish", mul.name),
                tract_onnx::tract_core::ops::nn::hard_swish(),
                &[input],
            )?[0];
            let six = p.add_const(
                format!("{}.hard_swish.six", mul.name),
                tensor0(6f32).broadcast_into_rank(rank)?,
            )?;
            let out = p.wire_node(
                format!("{}.hard_swish.times_six", mul.name),
                tract_onnx::tract_core::ops::math::mul(),
                &[hs, six],
            )?[0];
            p.shunt_outside(model, mul.id.into(), out)?;
            patch = Some(p);
            break;
        }
        let Some(p) = patch else { break };
        p.apply(model)?;
        // Drops the nodes left without successors, so each is matched once.
        model.compact()?;
        fused += 1;
    }
    Ok(fused)
}

#[cfg(feature = "analytics")]
impl Inference for Tract {
    fn run_all(&self, input: Vec<f32>) -> Result<Outputs, String> {
        let t = Tensor::from_shape(&self.shape, &input).map_err(|e| e.to_string())?;
        let out = self.plan.run(tvec!(t.into())).map_err(|e| e.to_string())?;
        out.iter()
            .map(|o| {
                let o = o.to_plain_array_view::<f32>().map_err(|e| e.to_string())?;
                Ok((o.shape().to_vec(), o.iter().copied().collect()))
            })
            .collect()
    }
}

/// ONNX Runtime through the `ort` crate, its shared library loaded at run time
/// (`load-dynamic`; it comes inside the `onnxruntime` wheel for each platform).
/// A session runs one input at a time: a reader takes the first idle one.
#[cfg(feature = "ort")]
pub struct Ort {
    sessions: Vec<std::sync::Mutex<ort::session::Session>>,
    shape: [usize; 4],
}

#[cfg(feature = "ort")]
impl Ort {
    pub fn load(
        library: &Path,
        path: &Path,
        shape: [usize; 4],
        sessions: usize,
    ) -> Result<Self, LoadError> {
        use ort::session::{builder::GraphOptimizationLevel, Session};
        let err = |e: ort::Error| LoadError::Model {
            path: path.to_owned(),
            reason: format!("onnxruntime ({}): {e}", library.display()),
        };
        let runtime = |reason: String| LoadError::Runtime {
            library: library.to_owned(),
            reason,
        };
        if !library.exists() {
            return Err(runtime("no such file".into()));
        }
        // The first call loads the library; later ones reuse it.
        ort::init_from(library.display().to_string())
            .with_name("edgecam")
            .commit()
            .map_err(|e| runtime(e.to_string()))?;
        let sessions = (0..sessions.max(1))
            .map(|_| {
                Session::builder()
                    .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
                    .and_then(|b| b.with_intra_threads(1))
                    .and_then(|b| b.commit_from_file(path))
                    .map(std::sync::Mutex::new)
                    .map_err(err)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { sessions, shape })
    }
}

#[cfg(feature = "ort")]
impl Inference for Ort {
    fn run_all(&self, input: Vec<f32>) -> Result<Outputs, String> {
        let shape: Vec<i64> = self.shape.iter().map(|d| *d as i64).collect();
        let t = ort::value::Tensor::from_array((shape, input)).map_err(|e| e.to_string())?;
        let mut session = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock().ok())
            .unwrap_or_else(|| self.sessions[0].lock().unwrap_or_else(|e| e.into_inner()));
        let out = session.run(ort::inputs![t]).map_err(|e| e.to_string())?;
        (0..out.len())
            .map(|i| {
                let (shape, data) = out[i]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| e.to_string())?;
                Ok((shape.iter().map(|d| *d as usize).collect(), data.to_vec()))
            })
            .collect()
    }
}

/// One model on `backend` for input `shape`.
#[cfg_attr(not(feature = "analytics"), allow(unused_variables))]
pub fn load_model(
    backend: &Backend,
    path: &Path,
    shape: [usize; 4],
) -> Result<Box<dyn Inference>, LoadError> {
    match backend {
        #[cfg(feature = "analytics")]
        Backend::Tract => Ok(Box::new(Tract::load(path, shape)?)),
        #[cfg(not(feature = "analytics"))]
        Backend::Tract => Err(LoadError::Model {
            path: path.to_owned(),
            reason: NO_ANALYTICS.into(),
        }),
        #[cfg(feature = "ort")]
        Backend::Onnxruntime { library, sessions } => {
            Ok(Box::new(Ort::load(library, path, shape, *sessions)?))
        }
        #[cfg(not(feature = "ort"))]
        Backend::Onnxruntime { .. } => Err(LoadError::Model {
            path: path.to_owned(),
            reason: "this build has no onnxruntime backend (build with --features ort)".into(),
        }),
    }
}

#[cfg(all(test, feature = "analytics"))]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::math;

    /// `x * min(max(x + 3, 0), 6)` on a 1x2x3x4 input, as the PP-OCR models
    /// spell hard-swish after conversion.
    fn spelled_out() -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 2, 3, 4]))?;
        let konst = |m: &mut TypedModel, name: &str, v: f32| {
            m.add_const(name, tensor0(v).broadcast_into_rank(4)?)
        };
        let three = konst(&mut m, "three", 3.0)?;
        let zero = konst(&mut m, "zero", 0.0)?;
        let six = konst(&mut m, "six", 6.0)?;
        let a = m.wire_node("add", math::add(), &[x, three])?[0];
        let b = m.wire_node("max", math::max(), &[a, zero])?[0];
        let c = m.wire_node("min", math::min(), &[b, six])?[0];
        let y = m.wire_node("mul", math::mul(), &[x, c])?[0];
        m.select_output_outlets(&[y])?;
        Ok(m)
    }

    fn run(m: TypedModel, input: &Tensor) -> TractResult<Vec<f32>> {
        let out = m.into_runnable()?.run(tvec!(input.clone().into()))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    }

    #[test]
    fn hard_swish_spelled_out_becomes_one_operation_with_the_same_values() -> TractResult<()> {
        // -5.5 .. 6: below -3, between, above 3.
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 5.5).collect();
        let input = Tensor::from_shape(&[1, 2, 3, 4], &values)?;
        let before = run(spelled_out()?, &input)?;
        let mut fused = spelled_out()?;
        assert_eq!(fuse_hard_swish(&mut fused)?, 1);
        let ops: Vec<String> = fused
            .nodes()
            .iter()
            .map(|n| n.op().name().to_string())
            .collect();
        assert!(ops.iter().any(|o| o == "HardSwish"), "{ops:?}");
        assert!(
            !ops.iter().any(|o| o.contains("Max") || o.contains("Min")),
            "{ops:?}"
        );
        let after = run(fused, &input)?;
        for ((x, b), a) in values.iter().zip(&before).zip(&after) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{x}: {b} against {a}"
            );
        }
        // A chain that is not hard-swish (4, not 3) is left alone.
        let mut other = spelled_out()?;
        let three = other.node_by_name("three")?.id;
        *other
            .node_mut(three)
            .op_as_mut::<tract_onnx::tract_core::ops::konst::Const>()
            .unwrap() = tract_onnx::tract_core::ops::konst::Const::new(
            tensor0(4f32).broadcast_into_rank(4)?.into_arc_tensor(),
        )?;
        assert_eq!(fuse_hard_swish(&mut other)?, 0);
        Ok(())
    }
}
