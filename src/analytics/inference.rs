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
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(err)?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(err)?
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok(Self { plan, shape })
    }
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
