//! The ONNX engine behind face analysis: a small trait ([`InferenceSession`]) and its implementation on
//! `tract-onnx` ([`TractSession`]).
//!
//! Why tract: it is pure Rust, builds offline from crates.io and matches onnxruntime to ~1e-6 on face detectors
//! and recognisers (shared/design/FACE-AND-MASK-MODELS.md); `ort` needs a native library downloaded at build time.
//! The detector and recogniser only see the trait, so another engine could be slotted in.
//!
//! Two kinds of file tract cannot run as they are, which [`OnnxModel::read`] deals with while loading:
//! * **blocked int8 weights** (opset 21 `DequantizeLinear` with `block_size`, as in OpenCV Zoo's `*_int8bq`
//!   models): every `DequantizeLinear` whose inputs are all constants is replaced by its float32 result,
//!   `(q - zero_point) * scale` per block, computed once at load time — exactly what a float32 export holds;
//! * **graph inputs that are not data**: stale weight names declared as inputs (SFace) or initializers listed as
//!   inputs (IR < 4 files) are dropped, so the model has the single image input a face model must have.
//!
//! Half-precision (fp16) graphs are refused with a clear message: tract runs them more than 60x slower than
//! float32 on x86, which would freeze face analysis for minutes.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tract_onnx::pb::{tensor_proto::DataType, type_proto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

/// A dense float32 tensor in row-major order: what goes into and comes out of a face model.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl FloatTensor {
    /// `None` when the shape does not hold exactly `data.len()` values.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<FloatTensor> {
        (shape.iter().product::<usize>() == data.len()).then_some(FloatTensor { shape, data })
    }
}

/// Why a model file could not be loaded or run.
#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("cannot read the model file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not an ONNX model: it cannot be decoded as one ({detail})")]
    NotOnnx { path: String, detail: String },
    #[error("{path} holds no ONNX graph")]
    NoGraph { path: String },
    #[error(
        "{path} has {} data inputs ({}); a face model takes exactly one image input",
        found.len(),
        if found.is_empty() { "none".to_string() } else { found.join(", ") }
    )]
    Inputs { path: String, found: Vec<String> },
    #[error("input `{name}` of {path} is declared as {declared}; a face model takes a float image [1, 3, H, W]")]
    InputShape { path: String, name: String, declared: String },
    #[error("input `{name}` of {path} is {declared} pixels, but {wanted} was asked for")]
    InputSize { path: String, name: String, declared: String, wanted: String },
    #[error(
        "{path} stores its weights in half precision (float16), which this engine runs more than 60 times slower \
         than float32; convert the model to float32 (for example with onnxconverter-common) and use that file"
    )]
    HalfPrecision { path: String },
    #[error("{path}: cannot convert the quantized weight `{name}` to float32: {detail}")]
    Dequantize { path: String, name: String, detail: String },
    #[error("{path} cannot be prepared for inference: {detail}")]
    Unsupported { path: String, detail: String },
    #[error("the model {path} failed while running: {detail}")]
    Run { path: String, detail: String },
}

/// One loaded model, ready to run on images of one size.
pub trait InferenceSession: Send + Sync {
    /// The file (or label) the model came from, for messages.
    fn source(&self) -> &str;
    /// Input shape the session was prepared for: `[1, 3, height, width]`.
    fn input_shape(&self) -> [usize; 4];
    /// Output names in graph order.
    fn output_names(&self) -> &[String];
    /// Runs the model on one input of [`Self::input_shape`]; outputs in graph order.
    fn run(&self, input: FloatTensor) -> Result<Vec<FloatTensor>, OnnxError>;
}

/// What [`OnnxModel::read`] learnt about a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub input_name: String,
    /// Declared input dimensions; `None` for a symbolic or unknown one.
    pub input_dims: Vec<Option<usize>>,
    pub output_names: Vec<String>,
    /// The graph itself starts with `Sub` then `Mul` on the input (mxnet-exported recognisers such as SFace
    /// normalise inside the graph): insightface then feeds raw 0..255 pixels (its ArcFaceONNX rule).
    pub normalises_input: bool,
    /// How many constant `DequantizeLinear` nodes were folded to float32.
    pub dequantized: usize,
    /// How many fp16 tensors, casts and declarations were rewritten to float32 ([`OnnxModel::read_as_f32`]).
    pub half_converted: usize,
}

/// A parsed, cleaned ONNX graph (see the module doc); [`OnnxModel::prepare`] compiles it for one input size.
pub struct OnnxModel {
    proto: ModelProto,
    info: ModelInfo,
    source: String,
}

impl OnnxModel {
    /// Reads and cleans a model file.
    pub fn read(path: &Path) -> Result<OnnxModel, OnnxError> {
        let shown = path.display().to_string();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|source| OnnxError::Io { path: shown.clone(), source })?;
        OnnxModel::from_bytes(&bytes, &shown)
    }

    /// As [`Self::read`] from bytes in memory; `source` names them in messages.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<OnnxModel, OnnxError> {
        OnnxModel::from_bytes_with(bytes, source, false)
    }

    /// As [`Self::read`], but half-precision (fp16) weights and casts are rewritten to float32 instead of being
    /// refused: segmentation models are often published as fp16, and tract runs those >60x slower.
    pub fn read_as_f32(path: &Path) -> Result<OnnxModel, OnnxError> {
        let shown = path.display().to_string();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|source| OnnxError::Io { path: shown.clone(), source })?;
        OnnxModel::from_bytes_with(&bytes, &shown, true)
    }

    /// As [`Self::from_bytes`]; `half_to_float` converts fp16 graphs (see [`Self::read_as_f32`]).
    pub fn from_bytes_with(bytes: &[u8], source: &str, half_to_float: bool) -> Result<OnnxModel, OnnxError> {
        let shown = source.to_string();
        let mut reader: &[u8] = bytes;
        let proto = guarded(&shown, || tract_onnx::onnx().proto_model_for_read(&mut reader))
            .and_then(|r| r.map_err(|e| OnnxError::NotOnnx { path: shown.clone(), detail: format!("{e:#}") }))?;
        let graph_ok = proto.graph.as_ref().is_some_and(|g| !g.node.is_empty() && !g.output.is_empty());
        if !graph_ok {
            // Protobuf decodes almost any short byte string into an empty message: a file without nodes is not
            // a model, whatever it is.
            return Err(if bytes.is_empty() || proto.graph.is_none() {
                OnnxError::NotOnnx { path: shown, detail: "no graph in the file".into() }
            } else {
                OnnxError::NoGraph { path: shown }
            });
        }
        let mut model = OnnxModel { proto, info: empty_info(), source: shown };
        model.info.dequantized = model.fold_dequantize()?;
        model.drop_non_data_inputs();
        if half_to_float {
            model.info.half_converted = model.convert_half()?;
        }
        model.check_precision()?;
        let half_converted = model.info.half_converted;
        model.info = model.describe(model.info.dequantized)?;
        model.info.half_converted = half_converted;
        Ok(model)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The declared `(height, width)` when both are fixed numbers.
    pub fn fixed_input_hw(&self) -> Option<(usize, usize)> {
        match self.info.input_dims.as_slice() {
            [_, _, Some(h), Some(w)] => Some((*h, *w)),
            _ => None,
        }
    }

    /// Compiles the graph for input `[1, 3, height, width]` (tract optimises for a fixed shape).
    pub fn prepare(self, height: usize, width: usize) -> Result<TractSession, OnnxError> {
        let info = &self.info;
        let declared = &info.input_dims;
        let wanted = [Some(1), Some(3), Some(height), Some(width)];
        for (d, w) in declared.iter().zip(wanted) {
            if let (Some(d), Some(w)) = (d, w) {
                if *d != w {
                    return Err(OnnxError::InputSize {
                        path: self.source.clone(),
                        name: info.input_name.clone(),
                        declared: dims_text(declared),
                        wanted: format!("[1, 3, {height}, {width}]"),
                    });
                }
            }
        }
        let source = self.source.clone();
        let unsupported = |e: TractError| OnnxError::Unsupported { path: source.clone(), detail: format!("{e:#}") };
        let proto = self.proto;
        let plan = guarded(&source, || -> Result<_, OnnxError> {
            let model = tract_onnx::onnx().model_for_proto_model(&proto).map_err(unsupported)?;
            let fact = f32::fact([1, 3, height, width]);
            let model = model.with_input_fact(0, fact.into()).map_err(unsupported)?;
            let model = model.into_optimized().map_err(unsupported)?;
            model.into_runnable().map_err(unsupported)
        })??;
        Ok(TractSession {
            plan,
            source: self.source,
            input: [1, 3, height, width],
            outputs: self.info.output_names.clone(),
            executor: None,
        })
    }

    /// Replaces every `DequantizeLinear` whose inputs are all initializers by a float32 initializer.
    fn fold_dequantize(&mut self) -> Result<usize, OnnxError> {
        let Some(graph) = self.proto.graph.as_mut() else { return Ok(0) };
        let index: HashMap<String, usize> =
            graph.initializer.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut folded = Vec::new();
        let mut kept = Vec::with_capacity(graph.node.len());
        for node in std::mem::take(&mut graph.node) {
            let constant = node.op_type == "DequantizeLinear"
                && node.domain.is_empty()
                && node.output.len() == 1
                && node.input.len() >= 2
                && node.input.iter().all(|i| i.is_empty() || index.contains_key(i));
            if !constant {
                kept.push(node);
                continue;
            }
            let tensor = |name: &str| index.get(name).map(|&i| &graph.initializer[i]);
            let value = dequantize_node(&node, tensor, &self.source)?;
            folded.push(value);
        }
        graph.node = kept;
        let count = folded.len();
        graph.initializer.extend(folded);
        // Initializers nothing reads any more (the int8 blocks, scales and zero points) are dropped.
        let used: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .chain(graph.output.iter().map(|o| o.name.as_str()))
            .collect();
        let keep: Vec<bool> = graph.initializer.iter().map(|t| used.contains(t.name.as_str())).collect();
        let mut k = keep.into_iter();
        graph.initializer.retain(|_| k.next().unwrap_or(true));
        Ok(count)
    }

    fn drop_non_data_inputs(&mut self) {
        let Some(graph) = self.proto.graph.as_mut() else { return };
        let inits: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
        let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
        graph.input.retain(|i| used.contains(&i.name) && !inits.contains(&i.name));
    }

    /// Rewrites a half-precision graph to float32: fp16 initializers and constant attributes become float32
    /// values, `Cast(to=FLOAT16)` becomes `Cast(to=FLOAT)`, and fp16 declarations of inputs, outputs and
    /// intermediate values become float32. The arithmetic is then done in float32 (slightly more precise than the
    /// fp16 original, never less). Returns how many items were rewritten.
    fn convert_half(&mut self) -> Result<usize, OnnxError> {
        let source = self.source.clone();
        let Some(graph) = self.proto.graph.as_mut() else { return Ok(0) };
        let half = DataType::Float16 as i32;
        let float = DataType::Float as i32;
        let mut count = 0;
        let to_float = |t: &TensorProto| -> Result<TensorProto, OnnxError> {
            let (shape, values) = tensor_values(t, &source)?;
            Ok(TensorProto {
                dims: shape.iter().map(|&d| d as i64).collect(),
                data_type: float,
                name: t.name.clone(),
                raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            })
        };
        for t in graph.initializer.iter_mut().filter(|t| t.data_type == half) {
            *t = to_float(t)?;
            count += 1;
        }
        for node in graph.node.iter_mut() {
            let is_cast = node.op_type == "Cast" && node.domain.is_empty();
            for a in node.attribute.iter_mut() {
                if let Some(t) = a.t.as_mut().filter(|t| t.data_type == half) {
                    *t = to_float(t)?;
                    count += 1;
                }
                if is_cast && a.name == "to" && a.i == half as i64 {
                    a.i = float as i64;
                    count += 1;
                }
            }
        }
        let declared = graph.input.iter_mut().chain(graph.output.iter_mut()).chain(graph.value_info.iter_mut());
        for v in declared {
            if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                if t.elem_type == half {
                    t.elem_type = float;
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    fn check_precision(&self) -> Result<(), OnnxError> {
        let Some(graph) = self.proto.graph.as_ref() else { return Ok(()) };
        let half = DataType::Float16 as i32;
        let half_input = graph.input.iter().any(|i| elem_type(i.r#type.as_ref()) == Some(half));
        if half_input || graph.initializer.iter().any(|t| t.data_type == half) {
            return Err(OnnxError::HalfPrecision { path: self.source.clone() });
        }
        Ok(())
    }

    fn describe(&self, dequantized: usize) -> Result<ModelInfo, OnnxError> {
        let Some(graph) = self.proto.graph.as_ref() else {
            return Err(OnnxError::NoGraph { path: self.source.clone() });
        };
        if graph.input.len() != 1 {
            return Err(OnnxError::Inputs {
                path: self.source.clone(),
                found: graph.input.iter().map(|i| i.name.clone()).collect(),
            });
        }
        let input = &graph.input[0];
        let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => Some(t),
            _ => None,
        };
        let dims: Vec<Option<usize>> = tensor_type
            .and_then(|t| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                            Some(*v as usize)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_else(|| vec![None; 4]);
        let float = tensor_type.is_none_or(|t| t.elem_type == DataType::Float as i32);
        let channels_ok = dims.get(1).copied().flatten().is_none_or(|c| c == 3);
        let batch_ok = dims.first().copied().flatten().is_none_or(|n| n == 1);
        if dims.len() != 4 || !float || !channels_ok || !batch_ok {
            let ty = tensor_type.map_or("untyped".to_string(), |t| {
                DataType::try_from(t.elem_type).map_or(format!("type {}", t.elem_type), |d| format!("{d:?}"))
            });
            return Err(OnnxError::InputShape {
                path: self.source.clone(),
                name: input.name.clone(),
                declared: format!("{ty} {}", dims_text(&dims)),
            });
        }
        Ok(ModelInfo {
            input_name: input.name.clone(),
            input_dims: dims,
            output_names: graph.output.iter().map(|o| o.name.clone()).collect(),
            normalises_input: starts_with_sub_mul(&graph.node, &input.name),
            dequantized,
            half_converted: 0,
        })
    }
}

fn empty_info() -> ModelInfo {
    ModelInfo {
        input_name: String::new(),
        input_dims: Vec::new(),
        output_names: Vec::new(),
        normalises_input: false,
        dequantized: 0,
        half_converted: 0,
    }
}

fn dims_text(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.map_or("?".to_string(), |v| v.to_string())).collect();
    format!("[{}]", parts.join(", "))
}

fn elem_type(t: Option<&tract_onnx::pb::TypeProto>) -> Option<i32> {
    match t.and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => Some(t.elem_type),
        _ => None,
    }
}

/// insightface's ArcFaceONNX looks for `Sub` and `Mul` among the first graph nodes to tell a graph that
/// normalises its own input (mxnet exports); here the same question is asked of the nodes that actually read the
/// input, since quantized files put their weight nodes first.
fn starts_with_sub_mul(nodes: &[NodeProto], input: &str) -> bool {
    let first: Vec<&NodeProto> = nodes.iter().filter(|n| n.input.iter().any(|i| i == input)).collect();
    let [sub] = first.as_slice() else { return false };
    if sub.op_type != "Sub" || sub.output.len() != 1 {
        return false;
    }
    let out = &sub.output[0];
    let next: Vec<&NodeProto> = nodes.iter().filter(|n| n.input.iter().any(|i| i == out)).collect();
    matches!(next.as_slice(), [mul] if mul.op_type == "Mul" || mul.op_type == "Div")
}

/// The values of a constant tensor as f32 (row-major) with its dimensions, through tract's own decoder.
/// Dimensions and row-major values of a constant tensor.
type Values = (Vec<usize>, Vec<f32>);

fn tensor_values(t: &TensorProto, source: &str) -> Result<Values, OnnxError> {
    let fail = |detail: String| OnnxError::Dequantize { path: source.to_string(), name: t.name.clone(), detail };
    let resolver = tract_onnx::data_resolver::MmapDataResolver;
    let decoded =
        guarded(source, || tract_onnx::tensor::load_tensor(&resolver, t, None))?.map_err(|e| fail(format!("{e:#}")))?;
    let as_f32 = decoded.cast_to::<f32>().map_err(|e| fail(format!("{e:#}")))?;
    let view = as_f32.to_plain_array_view::<f32>().map_err(|e| fail(format!("{e:#}")))?;
    Ok((view.shape().to_vec(), view.iter().copied().collect()))
}

/// ONNX `DequantizeLinear` (opset 10–21) on constants: per-tensor, per-axis or blocked along `axis`.
fn dequantize_node<'a>(
    node: &NodeProto,
    tensor: impl Fn(&str) -> Option<&'a TensorProto>,
    source: &str,
) -> Result<TensorProto, OnnxError> {
    let fail = |detail: String| OnnxError::Dequantize {
        path: source.to_string(),
        name: node.output.first().cloned().unwrap_or_default(),
        detail,
    };
    let get = |i: usize| -> Result<Option<Values>, OnnxError> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(name) => {
                let t = tensor(name).ok_or_else(|| fail(format!("input `{name}` is not a constant")))?;
                tensor_values(t, source).map(Some)
            }
        }
    };
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    let (shape, q) = get(0)?.ok_or_else(|| fail("no quantized input".into()))?;
    let (s_shape, scale) = get(1)?.ok_or_else(|| fail("no scale".into()))?;
    let zero = get(2)?;
    if let Some((z_shape, z)) = &zero {
        if z.len() != scale.len() || (z_shape != &s_shape && z.len() != 1) {
            return Err(fail(format!("zero point shape {z_shape:?} differs from the scale shape {s_shape:?}")));
        }
    }
    let zp = |i: usize| zero.as_ref().map_or(0.0, |(_, z)| z[i]);
    let rank = shape.len();
    let block = attr("block_size").unwrap_or(0);
    let axis = attr("axis").unwrap_or(1);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    // Index of the scale applying to element `flat`.
    let scale_index: Box<dyn Fn(usize) -> usize> = if scale.len() == 1 {
        Box::new(|_| 0)
    } else {
        if axis < 0 || axis as usize >= rank {
            return Err(fail(format!("axis {axis} is outside a rank-{rank} tensor")));
        }
        let axis = axis as usize;
        let inner: usize = shape[axis + 1..].iter().product();
        let along = shape[axis];
        if block <= 0 {
            if scale.len() != along {
                return Err(fail(format!("{} scales for {along} channels", scale.len())));
            }
            Box::new(move |flat| (flat / inner) % along)
        } else {
            let block = block as usize;
            let blocks = along.div_ceil(block);
            let mut expected = shape.clone();
            expected[axis] = blocks;
            if s_shape != expected {
                return Err(fail(format!("scale shape {s_shape:?}, expected {expected:?} for blocks of {block}")));
            }
            Box::new(move |flat| {
                let outer = flat / (inner * along);
                let a = (flat / inner) % along;
                let i = flat % inner;
                (outer * blocks + a / block) * inner + i
            })
        }
    };
    let mut raw = Vec::with_capacity(q.len() * 4);
    for (flat, &v) in q.iter().enumerate() {
        let s = scale_index(flat);
        raw.extend_from_slice(&((v - zp(s)) * scale[s]).to_le_bytes());
    }
    Ok(TensorProto {
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        name: node.output[0].clone(),
        raw_data: raw,
        ..Default::default()
    })
}

/// Runs `f`, turning a panic inside the ONNX library (it has a few `unimplemented!` paths for odd files) into an
/// error: a malformed model must never take the application down.
fn guarded<T>(source: &str, f: impl FnOnce() -> T) -> Result<T, OnnxError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let detail = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the ONNX reader stopped on this file".into());
        OnnxError::Unsupported { path: source.to_string(), detail }
    })
}

/// [`InferenceSession`] on a tract plan compiled for one input shape. Matrix products (convolutions included)
/// run on one process-wide pool of every core, shared by all sessions, so Auto mask and face analysis running
/// together share the cores instead of each taking all of them; [`TractSession::with_threads`] gives a session
/// its own pool instead (benchmarks), and a caller's `multithread_tract_scope` overrides the shared pool.
pub struct TractSession {
    plan: Arc<TypedSimplePlan>,
    source: String,
    input: [usize; 4],
    outputs: Vec<String>,
    /// `None`: the shared pool.
    executor: Option<multithread::Executor>,
}

impl TractSession {
    /// Reads, cleans and compiles a model file for `[1, 3, height, width]`.
    pub fn load(path: &Path, height: usize, width: usize) -> Result<TractSession, OnnxError> {
        OnnxModel::read(path)?.prepare(height, width)
    }

    /// Runs the matrix products on a private pool of `threads` threads (1 = the calling thread) instead of the
    /// shared one.
    pub fn with_threads(mut self, threads: usize) -> TractSession {
        self.executor = Some(executor_for(threads));
        self
    }
}

/// A tract executor of `threads` threads (1 = the calling thread).
pub fn executor_for(threads: usize) -> multithread::Executor {
    if threads > 1 {
        multithread::Executor::multithread_with_name(threads, "storymaker-onnx")
    } else {
        multithread::Executor::SingleThread
    }
}

/// Makes a pool of every core tract's default executor, once per process.
fn ensure_shared_pool() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let n = default_threads();
        if n > 1 {
            multithread::set_default_executor(executor_for(n));
        }
    });
}

/// Threads for one big CPU network: every core the machine reports (at least 1).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl InferenceSession for TractSession {
    fn source(&self) -> &str {
        &self.source
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, input: FloatTensor) -> Result<Vec<FloatTensor>, OnnxError> {
        let fail = |detail: String| OnnxError::Run { path: self.source.clone(), detail };
        if input.shape != self.input {
            return Err(fail(format!("input shape {:?}, the session was prepared for {:?}", input.shape, self.input)));
        }
        let tensor = Tensor::from_shape(&input.shape, &input.data).map_err(|e| fail(format!("{e:#}")))?;
        let run = || match &self.executor {
            Some(own) => multithread::multithread_tract_scope(own.clone(), || self.plan.run(tvec!(tensor.into()))),
            None => {
                ensure_shared_pool();
                self.plan.run(tvec!(tensor.into()))
            }
        };
        let outputs = guarded(&self.source, run)?.map_err(|e| fail(format!("{e:#}")))?;
        outputs
            .iter()
            .map(|t| {
                let t = t.cast_to::<f32>().map_err(|e| fail(format!("{e:#}")))?;
                let view = t.to_plain_array_view::<f32>().map_err(|e| fail(format!("{e:#}")))?;
                Ok(FloatTensor { shape: view.shape().to_vec(), data: view.iter().copied().collect() })
            })
            .collect()
    }
}
