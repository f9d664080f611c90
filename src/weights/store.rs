//! A VarBuilder backend over one or more `.safetensors` files whose errors name the file, the
//! tensor and the expected vs found shape (candle's own messages name neither file nor model).
//!
//! Files are memory-mapped so a 5 GB UNet loads without a copy. An optional *tensor map* lets the
//! same model code (which asks for diffusers/transformers names) read other layouts, e.g. a
//! single-file SDXL checkpoint with its original Stability names (`weights::sgm`,
//! `weights::single_file`). Renaming alone is not enough for those: OpenCLIP stores q, k and v
//! fused in one `in_proj_weight`, its `text_projection` transposed, and the LDM VAE its attention
//! projections as 1x1 convolutions; a [`TensorSource`] says how to get the tensor the model wants
//! out of the stored one, so no converted copy of a multi-GB file is ever written.
//!
//! A store is cheap to clone (the mapped files are shared), so one opened checkpoint can hand out
//! several VarBuilders with different maps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::WeightsError;

/// Equal parts along dim 0 of a stored tensor: part `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub index: usize,
    pub count: usize,
}

/// Where a model tensor comes from in the files, and how to turn the stored tensor into it.
/// Steps apply in field order: take the [`Chunk`] rows, transpose, then reshape across size-1 dims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSource {
    /// The tensor's name in the files.
    pub name: String,
    /// Keep only these rows (dim 0), e.g. q/k/v thirds of a fused `in_proj_weight`. Only the
    /// needed bytes are copied out of the mapping, not the whole fused tensor.
    pub chunk: Option<Chunk>,
    /// Swap the two dims of a 2-D tensor (OpenCLIP's `text_projection` is stored `[in, out]`).
    pub transpose: bool,
    /// When the expected shape differs only by size-1 dims (`[C, C, 1, 1]` 1x1 conv vs `[C, C]`
    /// linear, either way), reshape instead of failing. Only where the shape is known (`get`).
    pub fit_unit_dims: bool,
}

impl TensorSource {
    /// The stored tensor as it is, under `name`.
    pub fn new(name: impl Into<String>) -> TensorSource {
        TensorSource { name: name.into(), chunk: None, transpose: false, fit_unit_dims: false }
    }

    /// Part `index` of `count` equal row blocks.
    pub fn chunk(mut self, index: usize, count: usize) -> TensorSource {
        self.chunk = Some(Chunk { index, count });
        self
    }

    pub fn transposed(mut self) -> TensorSource {
        self.transpose = true;
        self
    }

    pub fn fit_unit_dims(mut self) -> TensorSource {
        self.fit_unit_dims = true;
        self
    }

    /// `name`, plus the transformation when there is one (for error messages).
    fn describe(&self, stored: &[usize]) -> String {
        let mut steps = Vec::new();
        if let Some(c) = self.chunk {
            steps.push(format!("rows part {} of {}", c.index + 1, c.count));
        }
        if self.transpose {
            steps.push("transposed".to_string());
        }
        if steps.is_empty() {
            self.name.clone()
        } else {
            format!("{} (stored {stored:?}, {})", self.name, steps.join(", "))
        }
    }
}

type TensorMap = dyn Fn(&str) -> Option<TensorSource> + Send + Sync;

struct Files {
    paths: Vec<PathBuf>,
    maps: Vec<MmapedSafetensors>,
    /// tensor name (in the files) -> (index into `paths`, stored shape)
    index: HashMap<String, (usize, Vec<usize>)>,
}

#[derive(Clone)]
pub struct TensorStore {
    files: Arc<Files>,
    map: Option<Arc<TensorMap>>,
}

impl TensorStore {
    /// Opens (memory-maps) the files and indexes their tensor names.
    pub fn open(files: &[PathBuf]) -> Result<TensorStore, WeightsError> {
        let mut maps = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            // SAFETY: the mapping is read-only; the documented contract of the models folder is
            // that weight files are not modified while the app runs (a truncated file would
            // fault, not corrupt memory safety of other data).
            let st = unsafe { MmapedSafetensors::new(path) }
                .map_err(|e| WeightsError::BadCheckpoint { path: path.display().to_string(), detail: e.to_string() })?;
            for (name, view) in st.tensors() {
                index.insert(name, (i, view.shape().to_vec()));
            }
            maps.push(st);
        }
        Ok(TensorStore { files: Arc::new(Files { paths: files.to_vec(), maps, index }), map: None })
    }

    /// Reads tensors under other names: `map(model_name) -> file_name`.
    pub fn with_key_map(self, map: impl Fn(&str) -> String + Send + Sync + 'static) -> TensorStore {
        self.with_tensor_map(move |name| Some(TensorSource::new(map(name))))
    }

    /// Reads tensors through `map(model_name)`: where each one is stored and how to transform it;
    /// `None` means the layout has no such tensor (reported as missing). Replaces any earlier map.
    pub fn with_tensor_map(
        mut self,
        map: impl Fn(&str) -> Option<TensorSource> + Send + Sync + 'static,
    ) -> TensorStore {
        self.map = Some(Arc::new(map));
        self
    }

    /// The same files without a map (cheap: the mappings are shared).
    pub fn unmapped(&self) -> TensorStore {
        TensorStore { files: self.files.clone(), map: None }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files.paths
    }

    /// Names of all tensors in the files.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.index.keys().map(String::as_str)
    }

    pub fn contains(&self, file_name: &str) -> bool {
        self.files.index.contains_key(file_name)
    }

    /// The stored shape of a tensor, by its name in the files (read from the header, no load).
    pub fn shape(&self, file_name: &str) -> Option<&[usize]> {
        self.files.index.get(file_name).map(|(_, s)| s.as_slice())
    }

    /// Where the model tensor `name` comes from (identity without a map).
    pub fn source(&self, name: &str) -> Option<TensorSource> {
        match &self.map {
            Some(f) => f(name),
            None => Some(TensorSource::new(name)),
        }
    }

    /// Loads a tensor by its name in the files (no map), converted to `dtype`.
    pub fn load(&self, file_name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(&(i, _)) = self.files.index.get(file_name) else {
            return Err(candle_core::Error::Msg(format!("{}: no tensor named {file_name}", self.describe_files())));
        };
        self.files.maps[i].load(file_name, dev)?.to_dtype(dtype)
    }

    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn describe_files(&self) -> String {
        match self.files.paths.as_slice() {
            [one] => one.display().to_string(),
            many => many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        }
    }

    /// The source of `name`, its file index and path, or the "missing tensor" error.
    fn locate(&self, name: &str, expected: Option<&Shape>) -> candle_core::Result<(TensorSource, usize, &Path)> {
        let expected = expected.map(|s| format!(", expected shape {:?}", s.dims())).unwrap_or_default();
        let Some(src) = self.source(name) else {
            return Err(candle_core::Error::Msg(format!(
                "{}: missing tensor {name} (this checkpoint layout has no counterpart for it){expected}",
                self.describe_files()
            )));
        };
        let Some(&(i, _)) = self.files.index.get(&src.name) else {
            let alias = if src.name != name { format!(" (stored as {})", src.name) } else { String::new() };
            return Err(candle_core::Error::Msg(format!(
                "{}: missing tensor {name}{alias}{expected}",
                self.describe_files()
            )));
        };
        Ok((src, i, self.files.paths[i].as_path()))
    }

    /// Loads `src` from file `i` with its chunk and transpose applied (not `fit_unit_dims`).
    fn load_source(&self, src: &TensorSource, i: usize, path: &Path, dev: &Device) -> candle_core::Result<Tensor> {
        let fail = |what: String| candle_core::Error::Msg(format!("{}: tensor {}: {what}", path.display(), src.name));
        let st = &self.files.maps[i];
        let t = match src.chunk {
            None => st.load(&src.name, dev)?,
            Some(Chunk { index, count }) => {
                let view = st.get(&src.name)?;
                let shape = view.shape().to_vec();
                let data = view.data();
                let rows = shape.first().copied().unwrap_or(0);
                if count == 0 || index >= count || rows == 0 || rows % count != 0 || data.len() % rows != 0 {
                    return Err(fail(format!(
                        "shape {shape:?} cannot be split into {count} equal row blocks (taking block {})",
                        index + 1
                    )));
                }
                let (part, row_bytes) = (rows / count, data.len() / rows);
                let mut part_shape = shape;
                part_shape[0] = part;
                let bytes = &data[index * part * row_bytes..(index + 1) * part * row_bytes];
                Tensor::from_raw_buffer(bytes, DType::try_from(view.dtype())?, &part_shape, dev)?
            }
        };
        if !src.transpose {
            return Ok(t);
        }
        if t.rank() != 2 {
            return Err(fail(format!("shape {:?} is not 2-D and cannot be transposed", t.dims())));
        }
        // Contiguous, so the model sees the same memory layout as from a converted file.
        t.t()?.contiguous()
    }
}

/// `a` and `b` have the same elements once size-1 dims are dropped (`[C, C, 1, 1]` vs `[C, C]`).
fn same_but_unit_dims(a: &[usize], b: &[usize]) -> bool {
    let strip = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    strip(a) == strip(b)
}

impl SimpleBackend for TensorStore {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let (src, i, path) = self.locate(name, Some(&s))?;
        let t = self.load_source(&src, i, path, dev)?;
        let t = if t.shape() != &s && src.fit_unit_dims && same_but_unit_dims(t.dims(), s.dims()) {
            t.reshape(&s)?
        } else {
            t
        };
        if t.shape() != &s {
            let stored = self.shape(&src.name).unwrap_or_default();
            let model = if src.name != name { format!(" (the model's {name})") } else { String::new() };
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor {}{model} has shape {:?} ({:?}), expected {:?}",
                path.display(),
                src.describe(stored),
                t.dims(),
                t.dtype(),
                s.dims()
            )));
        }
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let (src, i, path) = self.locate(name, None)?;
        self.load_source(&src, i, path, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.source(name).is_some_and(|src| self.contains(&src.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-file store with `fused` [6, 2] = 0..12 and `conv` [2, 2, 1, 1].
    fn store() -> (tempfile::TempDir, TensorStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.safetensors");
        let dev = Device::Cpu;
        let fused = Tensor::arange(0f32, 12.0, &dev).and_then(|t| t.reshape((6, 2))).expect("fused");
        let conv = Tensor::ones((2, 2, 1, 1), DType::F32, &dev).expect("conv");
        let tensors = HashMap::from([("fused".to_string(), fused), ("conv".to_string(), conv)]);
        candle_core::safetensors::save(&tensors, &path).expect("save");
        let store = TensorStore::open(&[path]).expect("open");
        (dir, store)
    }

    #[test]
    fn chunks_transposes_and_unit_dims() -> candle_core::Result<()> {
        let (_dir, store) = store();
        let map = |name: &str| match name {
            "k" => Some(TensorSource::new("fused").chunk(1, 3)),
            "kt" => Some(TensorSource::new("fused").chunk(1, 3).transposed()),
            "lin" => Some(TensorSource::new("conv").fit_unit_dims()),
            "strict" => Some(TensorSource::new("conv")),
            "bad" => Some(TensorSource::new("fused").chunk(0, 4)),
            _ => None,
        };
        let vb = store.with_tensor_map(map).into_var_builder(DType::F32, &Device::Cpu);
        assert_eq!(vb.get((2, 2), "k")?.to_vec2::<f32>()?, [[4.0, 5.0], [6.0, 7.0]]);
        assert_eq!(vb.get((2, 2), "kt")?.to_vec2::<f32>()?, [[4.0, 6.0], [5.0, 7.0]]);
        assert_eq!(vb.get((2, 2), "lin")?.dims(), [2, 2]);
        let err = vb.get((2, 2), "strict").expect_err("no reshape without fit_unit_dims").to_string();
        assert!(err.contains("t.safetensors") && err.contains("[2, 2, 1, 1]") && err.contains("expected [2, 2]"));
        let err = vb.get((3, 2), "kt").expect_err("wrong shape").to_string();
        assert!(err.contains("fused (stored [6, 2], rows part 2 of 3, transposed)"), "{err}");
        let err = vb.get((2, 2), "bad").expect_err("6 rows in 4 parts").to_string();
        assert!(err.contains("fused") && err.contains("[6, 2]") && err.contains("4 equal row blocks"), "{err}");
        let err = vb.get((2, 2), "other").expect_err("unmapped").to_string();
        assert!(err.contains("missing tensor other") && err.contains("no counterpart"), "{err}");
        assert!(vb.contains_tensor("k") && !vb.contains_tensor("other"));
        Ok(())
    }
}
