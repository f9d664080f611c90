//! Reads only the JSON header of a `.safetensors` file (8-byte little-endian length + JSON),
//! so a 7 GB checkpoint can be identified and validated without reading its tensors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

/// Headers larger than this are refused (real ones are a few hundred KB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum HeaderError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a safetensors file: {0}")]
    Format(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data_offsets: [u64; 2],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

pub fn read_header(path: &Path) -> Result<Header, HeaderError> {
    let mut f = std::fs::File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| HeaderError::Format("file shorter than 8 bytes".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n + 8 > file_len {
        return Err(HeaderError::Format(format!("header length {n} does not fit the file ({file_len} bytes)")));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf)?;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| HeaderError::Format(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (k, v) in raw {
        if k == "__metadata__" {
            metadata = serde_json::from_value(v).map_err(|e| HeaderError::Format(format!("__metadata__: {e}")))?;
        } else {
            let info: TensorInfo = serde_json::from_value(v).map_err(|e| HeaderError::Format(format!("{k}: {e}")))?;
            tensors.insert(k, info);
        }
    }
    Ok(Header { tensors, metadata })
}
