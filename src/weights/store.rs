//! A VarBuilder backend over one or more `.safetensors` files whose errors name the file, the
//! tensor and the expected vs found shape (candle's own messages name neither file nor model).
//!
//! Files are memory-mapped so a 5 GB UNet loads without a copy; an optional key map lets the
//! same model code read other layouts (e.g. SGM single-file names, see `weights::sgm`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::WeightsError;

type KeyMap = Box<dyn Fn(&str) -> String + Send + Sync>;

pub struct TensorStore {
    files: Vec<PathBuf>,
    maps: Vec<MmapedSafetensors>,
    /// tensor name (in the files) -> index into `files`
    index: HashMap<String, usize>,
    key_map: Option<KeyMap>,
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
            for (name, _) in st.tensors() {
                index.insert(name, i);
            }
            maps.push(st);
        }
        Ok(TensorStore { files: files.to_vec(), maps, index, key_map: None })
    }

    /// Reads tensors under other names: `map(model_name) -> file_name`.
    pub fn with_key_map(mut self, map: impl Fn(&str) -> String + Send + Sync + 'static) -> TensorStore {
        self.key_map = Some(Box::new(map));
        self
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Names of all tensors in the files.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, file_name: &str) -> bool {
        self.index.contains_key(file_name)
    }

    /// Loads a tensor by its name in the files (no key map), converted to `dtype`.
    pub fn load(&self, file_name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(&i) = self.index.get(file_name) else {
            return Err(candle_core::Error::Msg(format!("{}: no tensor named {file_name}", self.describe_files())));
        };
        self.maps[i].load(file_name, dev)?.to_dtype(dtype)
    }

    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn mapped(&self, name: &str) -> String {
        match &self.key_map {
            Some(f) => f(name),
            None => name.to_string(),
        }
    }

    fn describe_files(&self) -> String {
        match self.files.as_slice() {
            [one] => one.display().to_string(),
            many => many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        }
    }

    fn file_of(&self, name: &str) -> Option<(usize, &Path)> {
        self.index.get(name).map(|&i| (i, self.files[i].as_path()))
    }
}

impl SimpleBackend for TensorStore {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let file_name = self.mapped(name);
        let Some((i, path)) = self.file_of(&file_name) else {
            let alias = if file_name != name { format!(" (stored as {file_name})") } else { String::new() };
            return Err(candle_core::Error::Msg(format!(
                "{}: missing tensor {name}{alias}, expected shape {:?}",
                self.describe_files(),
                s.dims()
            )));
        };
        let t = self.maps[i].load(&file_name, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::Msg(format!(
                "{}: tensor {file_name} has shape {:?} ({:?}), expected {:?}",
                path.display(),
                t.dims(),
                t.dtype(),
                s.dims()
            )));
        }
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(&self.mapped(name), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.index.contains_key(&self.mapped(name))
    }
}
