//! A reader for PyTorch checkpoints (`torch.save` zip archives, e.g. StoryMaker's `mask.bin` and
//! the face-data `.bin` files) that never executes anything from the file.
//!
//! Model files come from the internet, and a pickle is a program: `torch.load` without
//! `weights_only` will call any Python function the file names. This reader runs a small pickle
//! interpreter that knows only the opcodes `torch.save` (protocol 2) writes, and accepts only
//! the Python globals needed to rebuild tensors and dicts ([`ALLOWED_GLOBALS`]). Any other global
//! (`os.system`, `builtins.eval`, ...) stops the load with [`TorchPickleError::ForbiddenGlobal`]
//! before anything else happens; nothing is ever "called" except our own Rust constructors.
//!
//! No header or shape can make it allocate without bound or read out of bounds:
//!
//! * the pickle (`data.pkl`) is at most [`MAX_PICKLE_BYTES`]; strings, the interpreter's stack,
//!   its memo, its mark depth, the number of objects and container items all have caps;
//! * every tensor's metadata is checked with checked arithmetic before any tensor byte is read:
//!   the shape's element count, and `storage_offset + sum((size_i - 1) * stride_i)` must lie
//!   inside its storage; the storage's declared size (elements x element size) must equal the
//!   size of its zip entry in the central directory, which must be stored uncompressed and no
//!   larger than the file itself; the distinct storages read may not add up to more than the
//!   file (zip records that overlap would otherwise hand out the same bytes many times);
//! * non-contiguous tensors (a transposed or expanded view) are copied into contiguous order,
//!   and all such copies together may not exceed the file's size (an expanded view could
//!   otherwise claim terabytes out of one element).
//!
//! Each storage is read once (streamed from the zip entry, whose CRC the `zip` crate checks), put
//! on the target device once, and every tensor that is a contiguous view of it shares that
//! memory. Storages are read in turn, so loading a 3.3 GB `mask.bin` needs the tensors plus one
//! storage's bytes in flight.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use thiserror::Error;
use zip::{CompressionMethod, ZipArchive};

/// Largest `data.pkl` accepted. The real `mask.bin` (1373 tensors) has a pickle of a few hundred
/// KB; 16 MiB leaves ample room while bounding the interpreter's memory.
pub const MAX_PICKLE_BYTES: u64 = 16 << 20;
/// Longest string (dict key, storage name, ...) in a pickle.
pub const MAX_STRING_BYTES: usize = 64 << 10;
/// Most objects the interpreter creates (each tensor costs about 20).
pub const MAX_OBJECTS: usize = 1 << 20;
/// Most values on the interpreter's stack, including the frames saved by MARK.
pub const MAX_STACK: usize = 1 << 20;
/// Deepest MARK nesting.
pub const MAX_MARK_DEPTH: usize = 256;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 20;
/// Most items all lists, tuples and dicts together may hold.
pub const MAX_CONTAINER_ITEMS: usize = 4 << 20;
/// Most dimensions of a tensor.
pub const MAX_DIMS: usize = 16;
/// Deepest nesting [`TorchCheckpoint::value`] follows.
pub const MAX_VALUE_DEPTH: usize = 32;
/// Most nodes [`TorchCheckpoint::value`] returns.
pub const MAX_VALUE_NODES: usize = 1 << 16;

/// The Python globals a checkpoint may name (`module.name`). `torch.<dtype>` names
/// (`torch.float32`, ...) are accepted too: `_rebuild_tensor_v3` passes the dtype as a global.
pub const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.DoubleStorage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.storage.UntypedStorage",
];

#[derive(Debug, Error)]
pub enum TorchPickleError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PyTorch checkpoint written by torch.save, or it is truncated or corrupt: {detail}")]
    NotTorchZip { path: String, detail: String },
    #[error(
        "refusing to load {path}: it contains the Python global `{global}`, which a weight file never needs \
         (a pickle can run any code it names; only torch's tensor-rebuilding globals are accepted)"
    )]
    ForbiddenGlobal { path: String, global: String },
    #[error("{path} is corrupt or not a plain PyTorch state dict: {detail}")]
    Malformed { path: String, detail: String },
    #[error("{path} is too large for this loader: {detail}")]
    TooLarge { path: String, detail: String },
    #[error("{path}: tensor `{name}`: {detail}")]
    BadTensor { path: String, name: String, detail: String },
    #[error("{path} has no entry `{key}` (it has: {available})")]
    MissingKey { path: String, key: String, available: String },
}

/// A tensor's element type as torch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TorchDType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    F8E4M3,
    U16,
    U32,
    U64,
}

impl TorchDType {
    const ALL: [TorchDType; 14] = [
        TorchDType::F32,
        TorchDType::F16,
        TorchDType::BF16,
        TorchDType::F64,
        TorchDType::I64,
        TorchDType::I32,
        TorchDType::I16,
        TorchDType::I8,
        TorchDType::U8,
        TorchDType::Bool,
        TorchDType::F8E4M3,
        TorchDType::U16,
        TorchDType::U32,
        TorchDType::U64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 | TorchDType::U64 => 8,
            TorchDType::F32 | TorchDType::I32 | TorchDType::U32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 | TorchDType::U16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool | TorchDType::F8E4M3 => 1,
        }
    }

    /// The candle dtype holding the same bytes; `bool` becomes `u8` (0/1). `None`: candle has no
    /// such type.
    pub fn candle(self) -> Option<DType> {
        Some(match self {
            TorchDType::F32 => DType::F32,
            TorchDType::F16 => DType::F16,
            TorchDType::BF16 => DType::BF16,
            TorchDType::F64 => DType::F64,
            TorchDType::I64 => DType::I64,
            TorchDType::I32 => DType::I32,
            TorchDType::I16 => DType::I16,
            TorchDType::U8 | TorchDType::Bool => DType::U8,
            TorchDType::F8E4M3 => DType::F8E4M3,
            TorchDType::U32 => DType::U32,
            TorchDType::I8 | TorchDType::U16 | TorchDType::U64 => return None,
        })
    }

    /// torch's name (`float32`, ...), as pickled for `torch.<name>`.
    pub fn torch_name(self) -> &'static str {
        match self {
            TorchDType::F32 => "float32",
            TorchDType::F16 => "float16",
            TorchDType::BF16 => "bfloat16",
            TorchDType::F64 => "float64",
            TorchDType::I64 => "int64",
            TorchDType::I32 => "int32",
            TorchDType::I16 => "int16",
            TorchDType::I8 => "int8",
            TorchDType::U8 => "uint8",
            TorchDType::Bool => "bool",
            TorchDType::F8E4M3 => "float8_e4m3fn",
            TorchDType::U16 => "uint16",
            TorchDType::U32 => "uint32",
            TorchDType::U64 => "uint64",
        }
    }

    /// The legacy typed-storage class name (`FloatStorage`, ...), where there is one.
    fn storage_name(self) -> Option<&'static str> {
        Some(match self {
            TorchDType::F32 => "FloatStorage",
            TorchDType::F16 => "HalfStorage",
            TorchDType::BF16 => "BFloat16Storage",
            TorchDType::F64 => "DoubleStorage",
            TorchDType::I64 => "LongStorage",
            TorchDType::I32 => "IntStorage",
            TorchDType::I16 => "ShortStorage",
            TorchDType::I8 => "CharStorage",
            TorchDType::U8 => "ByteStorage",
            TorchDType::Bool => "BoolStorage",
            _ => return None,
        })
    }

    fn from_torch_name(name: &str) -> Option<TorchDType> {
        let alias = match name {
            "float" => "float32",
            "half" => "float16",
            "double" => "float64",
            "long" => "int64",
            "int" => "int32",
            "short" => "int16",
            other => other,
        };
        TorchDType::ALL.into_iter().find(|d| d.torch_name() == alias)
    }

    fn from_storage_name(name: &str) -> Option<TorchDType> {
        TorchDType::ALL.into_iter().find(|d| d.storage_name() == Some(name))
    }
}

impl fmt::Display for TorchDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "torch.{}", self.torch_name())
    }
}

/// What [`TorchCheckpoint::value`] reports about a tensor (its bytes are not read).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: TorchDType,
    pub shape: Vec<usize>,
}

/// A small non-tensor structure from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits.
    BigInt,
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Entries in file order (an `OrderedDict` is a dict too).
    Dict(Vec<(Value, Value)>),
    Tensor(TensorInfo),
    /// Anything else (a bare global, a storage), or what lies beyond the depth/size budget.
    Other(String),
}

// ------------------------------------------------------------------------------------------------
// The pickle interpreter

type ObjId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildParameterWithState,
    TypedStorage(TorchDType),
    UntypedStorage,
    Dtype(TorchDType),
}

fn allowed_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor_v3") => Some(Global::RebuildTensorV3),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => Some(Global::RebuildParameterWithState),
        ("torch.storage", "UntypedStorage") => Some(Global::UntypedStorage),
        ("torch", n) if n.ends_with("Storage") => TorchDType::from_storage_name(n).map(Global::TypedStorage),
        ("torch", n) => TorchDType::from_torch_name(n).map(Global::Dtype),
        _ => None,
    }
}

/// A tensor as the pickle describes it; its bytes live in zip entry `data/<storage_key>`.
#[derive(Debug, Clone)]
struct TensorMeta {
    storage_key: String,
    /// The storage's size in bytes, as declared by the pickle (checked against the zip entry).
    storage_bytes: u64,
    dtype: TorchDType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    /// `None`: an untyped storage (`numel` counts bytes).
    dtype: Option<TorchDType>,
    bytes: u64,
}

#[derive(Debug)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    BigInt,
    Float(f64),
    Str(String),
    Tuple(Vec<ObjId>),
    List(Vec<ObjId>),
    Dict(Vec<(ObjId, ObjId)>),
    Global(Global),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorMeta>),
}

/// Why the interpreter stopped (the path is added by the caller).
#[derive(Debug)]
enum VmError {
    Forbidden(String),
    Malformed(String),
    TooLarge(String),
}

fn malformed<T>(msg: impl Into<String>) -> Result<T, VmError> {
    Err(VmError::Malformed(msg.into()))
}

/// The interpreted pickle: an arena of objects and the root.
#[derive(Debug)]
struct Parsed {
    objs: Vec<Obj>,
    root: ObjId,
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    objs: Vec<Obj>,
    stack: Vec<ObjId>,
    metastack: Vec<Vec<ObjId>>,
    /// Values held in `metastack` frames (for the MAX_STACK cap).
    metastack_len: usize,
    memo: HashMap<u32, ObjId>,
    container_items: usize,
}

/// Printable form of a global for messages (escapes anything odd).
fn global_name(module: &str, name: &str) -> String {
    let clean = |s: &str| {
        if s.chars().all(|c| c.is_ascii_graphic()) {
            s.to_string()
        } else {
            format!("{s:?}")
        }
    };
    format!("{}.{}", clean(module), clean(name))
}

impl<'a> Vm<'a> {
    fn new(data: &'a [u8]) -> Vm<'a> {
        Vm {
            data,
            pos: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            metastack: Vec::new(),
            metastack_len: 0,
            memo: HashMap::new(),
            container_items: 0,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], VmError> {
        let data: &'a [u8] = self.data;
        match self.pos.checked_add(n).and_then(|end| data.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => malformed(format!("the pickle ends inside an opcode at byte {}", self.pos)),
        }
    }

    fn u8(&mut self) -> Result<u8, VmError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], VmError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn line(&mut self) -> Result<&'a str, VmError> {
        const MAX_LINE: usize = 256;
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos.min(data.len())..];
        let Some(n) = rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') else {
            return malformed(format!("a GLOBAL name at byte {} is unterminated or too long", self.pos));
        };
        let line = &rest[..n];
        self.pos += n + 1;
        std::str::from_utf8(line).map_err(|_| VmError::Malformed("a GLOBAL name is not text".into()))
    }

    fn string(&mut self, len: u64) -> Result<ObjId, VmError> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_STRING_BYTES {
            return Err(VmError::TooLarge(format!(
                "a string of {len} bytes at byte {} (at most {MAX_STRING_BYTES} accepted)",
                self.pos
            )));
        }
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| VmError::Malformed("a string is not valid UTF-8".into()))?;
        self.alloc(Obj::Str(s.to_string()))
    }

    fn alloc(&mut self, obj: Obj) -> Result<ObjId, VmError> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(VmError::TooLarge(format!("the pickle creates more than {MAX_OBJECTS} objects")));
        }
        self.objs.push(obj);
        Ok(self.objs.len() - 1)
    }

    fn push(&mut self, id: ObjId) -> Result<(), VmError> {
        if self.stack.len() + self.metastack_len >= MAX_STACK {
            return Err(VmError::TooLarge(format!("the pickle's stack grows beyond {MAX_STACK} values")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, obj: Obj) -> Result<(), VmError> {
        let id = self.alloc(obj)?;
        self.push(id)
    }

    fn pop(&mut self) -> Result<ObjId, VmError> {
        match self.stack.pop() {
            Some(id) => Ok(id),
            None => malformed(format!("stack underflow at byte {}", self.pos)),
        }
    }

    fn top(&self) -> Result<ObjId, VmError> {
        match self.stack.last() {
            Some(&id) => Ok(id),
            None => malformed(format!("stack underflow at byte {}", self.pos)),
        }
    }

    fn mark(&mut self) -> Result<(), VmError> {
        if self.metastack.len() >= MAX_MARK_DEPTH {
            return Err(VmError::TooLarge(format!("MARKs nest deeper than {MAX_MARK_DEPTH}")));
        }
        self.metastack_len += self.stack.len();
        let frame = std::mem::take(&mut self.stack);
        self.metastack.push(frame);
        Ok(())
    }

    /// The values pushed since the last MARK (and that MARK is gone).
    fn pop_mark(&mut self) -> Result<Vec<ObjId>, VmError> {
        let Some(frame) = self.metastack.pop() else {
            return malformed(format!("no MARK to pop to at byte {}", self.pos));
        };
        self.metastack_len -= frame.len();
        Ok(std::mem::replace(&mut self.stack, frame))
    }

    fn count_items(&mut self, n: usize) -> Result<(), VmError> {
        self.container_items = self.container_items.saturating_add(n);
        if self.container_items > MAX_CONTAINER_ITEMS {
            return Err(VmError::TooLarge(format!("containers hold more than {MAX_CONTAINER_ITEMS} items")));
        }
        Ok(())
    }

    fn memo_put(&mut self, index: u32) -> Result<(), VmError> {
        let top = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(VmError::TooLarge(format!("the memo grows beyond {MAX_MEMO} entries")));
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<(), VmError> {
        match self.memo.get(&index) {
            Some(&id) => self.push(id),
            None => malformed(format!("memo entry {index} is read before it is written")),
        }
    }

    fn int(&self, id: ObjId) -> Option<i64> {
        match self.objs.get(id) {
            Some(Obj::Int(i)) => Some(*i),
            Some(Obj::Bool(b)) => Some(*b as i64),
            _ => None,
        }
    }

    fn str(&self, id: ObjId) -> Option<&str> {
        match self.objs.get(id) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn tuple(&self, id: ObjId) -> Option<&[ObjId]> {
        match self.objs.get(id) {
            Some(Obj::Tuple(t)) => Some(t),
            _ => None,
        }
    }

    fn usizes(&self, id: ObjId, what: &str) -> Result<Vec<usize>, VmError> {
        let Some(items) = self.tuple(id) else { return malformed(format!("a tensor's {what} is not a tuple")) };
        if items.len() > MAX_DIMS {
            return malformed(format!("a tensor has {} dimensions (at most {MAX_DIMS} accepted)", items.len()));
        }
        items
            .iter()
            .map(|&i| match self.int(i).map(usize::try_from) {
                Some(Ok(v)) => Ok(v),
                _ => malformed(format!("a tensor's {what} holds something other than a non-negative integer")),
            })
            .collect()
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), VmError> {
        match allowed_global(module, name) {
            Some(g) => self.push_new(Obj::Global(g)),
            None => Err(VmError::Forbidden(global_name(module, name))),
        }
    }

    fn run(mut self) -> Result<Parsed, VmError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let v = self.u8()?;
                    if !(2..=5).contains(&v) {
                        return malformed(format!("unsupported pickle protocol {v}"));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only
                    self.take(8)?;
                }
                b'}' => self.push_new(Obj::Dict(Vec::new()))?,
                b']' => self.push_new(Obj::List(Vec::new()))?,
                b')' => self.push_new(Obj::Tuple(Vec::new()))?,
                b'(' => self.mark()?,
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?);
                    let id = self.string(n as u64)?;
                    self.push(id)?;
                }
                0x8c => {
                    let n = self.u8()?;
                    let id = self.string(n as u64)?;
                    self.push(id)?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.array()?);
                    let id = self.string(n)?;
                    self.push(id)?;
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i as u32)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    // MEMOIZE
                    let i = u32::try_from(self.memo.len())
                        .map_err(|_| VmError::TooLarge("the memo is too large".into()))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i as u32)?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.memo_get(i)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push_new(Obj::Int(v as i64))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_new(Obj::Int(v as i64))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push_new(Obj::Int(v as i64))?;
                }
                0x8a => {
                    // LONG1: n little-endian two's-complement bytes
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    let obj = if n <= 8 {
                        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
                        let mut a = [fill; 8];
                        a[..n].copy_from_slice(bytes);
                        Obj::Int(i64::from_le_bytes(a))
                    } else {
                        Obj::BigInt
                    };
                    self.push_new(obj)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push_new(Obj::Float(v))?;
                }
                0x88 => self.push_new(Obj::Bool(true))?,
                0x89 => self.push_new(Obj::Bool(false))?,
                b'N' => self.push_new(Obj::None)?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.count_items(items.len())?;
                    self.push_new(Obj::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return malformed(format!("stack underflow at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.count_items(n)?;
                    self.push_new(Obj::Tuple(items))?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return malformed(format!("SETITEMS with an odd number of values at byte {at}"));
                    }
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str(module), self.str(name)) else {
                        return malformed("STACK_GLOBAL on something other than two strings");
                    };
                    let (module, name) = (module.to_string(), name.to_string());
                    self.global(&module, &name)?;
                }
                b'i' => {
                    // INST names a class and instantiates it: never part of a state dict.
                    let module = self.line()?;
                    let name = self.line()?;
                    return Err(VmError::Forbidden(global_name(module, name)));
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let id = self.reduce(func, args)?;
                    self.push(id)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push_new(Obj::Storage(Box::new(storage)))?;
                }
                b'b' => {
                    // BUILD: the objects the allow-list can create keep no Python state; the
                    // state (already parsed, so harmless) is dropped.
                    self.pop()?;
                    self.top()?;
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Parsed { objs: self.objs, root });
                }
                other => {
                    return malformed(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {at} (torch.save never writes it)"
                    ))
                }
            }
        }
    }

    fn set_items(&mut self, items: Vec<ObjId>) -> Result<(), VmError> {
        self.count_items(items.len())?;
        let target = self.top()?;
        let Some(Obj::Dict(entries)) = self.objs.get_mut(target) else {
            return malformed("SETITEM on something that is not a dict");
        };
        entries.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
        Ok(())
    }

    fn append(&mut self, items: Vec<ObjId>) -> Result<(), VmError> {
        self.count_items(items.len())?;
        let target = self.top()?;
        let Some(Obj::List(list)) = self.objs.get_mut(target) else {
            return malformed("APPEND on something that is not a list");
        };
        list.extend(items);
        Ok(())
    }

    /// `('storage', <storage class>, key, location, numel)`.
    fn persistent_load(&self, pid: ObjId) -> Result<StorageRef, VmError> {
        let Some(t) = self.tuple(pid) else { return malformed("a persistent id is not a tuple") };
        let [tag, class, key, _location, numel] = t else {
            return malformed(format!("a persistent id has {} fields, not 5", t.len()));
        };
        if self.str(*tag) != Some("storage") {
            return malformed("a persistent id is not a storage");
        }
        let dtype = match self.objs.get(*class) {
            Some(Obj::Global(Global::TypedStorage(d))) => Some(*d),
            Some(Obj::Global(Global::UntypedStorage)) => None,
            _ => return malformed("a storage's type is not a torch storage class"),
        };
        let Some(key) = self.str(*key) else { return malformed("a storage's key is not a string") };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return malformed(format!("storage key {key:?} is not a plain name"));
        }
        let Some(numel) = self.int(*numel).and_then(|n| u64::try_from(n).ok()) else {
            return malformed(format!("storage `{key}` has no valid size"));
        };
        let es = dtype.map_or(1, |d| d.size()) as u64;
        let Some(bytes) = numel.checked_mul(es) else {
            return Err(VmError::TooLarge(format!("storage `{key}` declares {numel} elements")));
        };
        Ok(StorageRef { key: key.to_string(), dtype, bytes })
    }

    fn reduce(&mut self, func: ObjId, args: ObjId) -> Result<ObjId, VmError> {
        let Some(Obj::Global(g)) = self.objs.get(func) else {
            return malformed("REDUCE calls something that is not an allowed global");
        };
        let g = *g;
        let Some(a) = self.tuple(args) else { return malformed("REDUCE arguments are not a tuple") };
        let a = a.to_vec();
        match g {
            Global::OrderedDict => {
                if !a.is_empty() {
                    return malformed("OrderedDict is built with arguments (torch.save builds it empty)");
                }
                self.alloc(Obj::Dict(Vec::new()))
            }
            Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
                let v3 = g == Global::RebuildTensorV3;
                let n = if v3 { 7 } else { 6 };
                if a.len() != n && a.len() != n + 1 {
                    return malformed(format!("a tensor is rebuilt with {} arguments", a.len()));
                }
                let Some(Obj::Storage(storage)) = self.objs.get(a[0]) else {
                    return malformed("a tensor is rebuilt from something that is not a storage");
                };
                let storage = (**storage).clone();
                let Some(offset) = self.int(a[1]).and_then(|o| usize::try_from(o).ok()) else {
                    return malformed("a tensor's storage offset is not a non-negative integer");
                };
                let shape = self.usizes(a[2], "size")?;
                let stride = self.usizes(a[3], "stride")?;
                if shape.len() != stride.len() {
                    return malformed(format!("a tensor has {} sizes but {} strides", shape.len(), stride.len()));
                }
                let dtype = if v3 {
                    match self.objs.get(a[6]) {
                        Some(Obj::Global(Global::Dtype(d))) => *d,
                        _ => return malformed("a tensor's dtype is not a torch dtype"),
                    }
                } else {
                    match storage.dtype {
                        Some(d) => d,
                        None => return malformed("_rebuild_tensor_v2 on an untyped storage"),
                    }
                };
                let meta =
                    TensorMeta { storage_key: storage.key, storage_bytes: storage.bytes, dtype, offset, shape, stride };
                self.alloc(Obj::Tensor(Box::new(meta)))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let n = if g == Global::RebuildParameter { 3 } else { 4 };
                if a.len() != n {
                    return malformed(format!("a parameter is rebuilt with {} arguments", a.len()));
                }
                match self.objs.get(a[0]) {
                    Some(Obj::Tensor(_)) => Ok(a[0]),
                    _ => malformed("a parameter wraps something that is not a tensor"),
                }
            }
            Global::TypedStorage(d) => malformed(format!("the storage class for {d} is called")),
            Global::UntypedStorage => malformed("torch.storage.UntypedStorage is called"),
            Global::Dtype(d) => malformed(format!("{d} is called")),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Tensor layout checks

/// How to turn a storage's bytes into one tensor, after every check passed.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    dtype: DType,
    /// Bytes per element.
    es: usize,
    numel: usize,
    /// A plain row-major view: `numel` elements from `offset` on.
    contiguous: bool,
    /// Strides with those of size-1 dims set to 0 (they never move).
    stride: Vec<usize>,
}

/// Checks a tensor against its storage's size in bytes; every error says what is wrong.
fn plan(meta: &TensorMeta, storage_bytes: u64) -> Result<Plan, String> {
    let Some(dtype) = meta.dtype.candle() else {
        return Err(format!("dtype {} is not supported", meta.dtype));
    };
    let es = meta.dtype.size();
    let storage_numel = usize::try_from(storage_bytes / es as u64).map_err(|_| "its storage is too large")?;
    let numel = meta
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} has more elements than can be addressed", meta.shape))?;
    let stride: Vec<usize> =
        meta.shape.iter().zip(&meta.stride).map(|(&size, &st)| if size == 1 { 0 } else { st }).collect();
    if numel == 0 {
        if meta.offset > storage_numel {
            return Err(format!(
                "storage offset {} lies beyond its storage `{}` of {storage_numel} elements",
                meta.offset, meta.storage_key
            ));
        }
        return Ok(Plan { dtype, es, numel, contiguous: true, stride });
    }
    let last = meta
        .shape
        .iter()
        .zip(&stride)
        .try_fold(meta.offset, |acc, (&size, &st)| (size - 1).checked_mul(st).and_then(|x| acc.checked_add(x)));
    let exceeds = |reach: String| {
        format!(
            "shape {:?} with strides {:?} at storage offset {} {reach}, but its storage `{}` holds {storage_numel} \
             {} elements",
            meta.shape, meta.stride, meta.offset, meta.storage_key, meta.dtype
        )
    };
    match last {
        Some(last) if last < storage_numel => {}
        Some(last) => return Err(exceeds(format!("reaches element {last}"))),
        None => return Err(exceeds("reaches beyond any addressable element".to_string())),
    }
    let mut expected = 1usize;
    let mut contiguous = true;
    for (&size, &st) in meta.shape.iter().zip(&stride).rev() {
        if size != 1 && st != expected {
            contiguous = false;
        }
        expected = expected.saturating_mul(size);
    }
    Ok(Plan { dtype, es, numel, contiguous, stride })
}

/// Copies a strided view into row-major order (bounds were checked by [`plan`]).
fn gather(bytes: &[u8], meta: &TensorMeta, plan: &Plan) -> Option<Vec<u8>> {
    let es = plan.es;
    let mut out = Vec::with_capacity(plan.numel.checked_mul(es)?);
    let dims = meta.shape.len();
    let mut index = vec![0usize; dims];
    let mut src = meta.offset;
    for _ in 0..plan.numel {
        let start = src.checked_mul(es)?;
        out.extend_from_slice(bytes.get(start..start.checked_add(es)?)?);
        for d in (0..dims).rev() {
            index[d] += 1;
            if index[d] < meta.shape[d] {
                src = src.checked_add(plan.stride[d])?;
                break;
            }
            src = src.checked_sub(plan.stride[d].checked_mul(meta.shape[d] - 1)?)?;
            index[d] = 0;
        }
    }
    Some(out)
}

// ------------------------------------------------------------------------------------------------
// The checkpoint

/// An opened `torch.save` checkpoint: the pickle is interpreted (and every global checked) by
/// [`TorchCheckpoint::open`]; tensor bytes are read by [`TorchCheckpoint::state_dict`].
pub struct TorchCheckpoint {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
    /// `<archive name>/`, the folder holding `data.pkl` and `data/`.
    prefix: String,
    file_len: u64,
    parsed: Parsed,
    /// Storages read so far and their bytes: distinct storages together cannot exceed the file
    /// (zip records that overlap could otherwise hand out the same bytes many times).
    storages_read: HashSet<String>,
    storage_bytes_read: u64,
    /// Bytes of non-contiguous tensors copied so far (bounded by the file size too).
    gathered: u64,
}

impl fmt::Debug for TorchCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TorchCheckpoint").field("path", &self.path).field("prefix", &self.prefix).finish()
    }
}

impl TorchCheckpoint {
    /// Opens the archive and interprets its pickle. Fails on any forbidden global, malformed
    /// pickle or non-torch file; reads no tensor data.
    pub fn open(path: &Path) -> Result<TorchCheckpoint, TorchPickleError> {
        let shown = path.display().to_string();
        let io = |source| TorchPickleError::Io { path: shown.clone(), source };
        let not_zip = |detail: String| TorchPickleError::NotTorchZip { path: shown.clone(), detail };
        let malformed = |detail: String| TorchPickleError::Malformed { path: shown.clone(), detail };

        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut file, &mut magic).map_err(io)?;
        if got >= 2 && magic[0] == 0x80 && (2..=5).contains(&magic[1]) {
            return Err(not_zip(
                "it is a bare pickle in torch's legacy format (torch < 1.6 or _use_new_zipfile_serialization=False), \
                 which this loader does not read; re-save it with a current torch"
                    .to_string(),
            ));
        }
        if got < 4 || &magic != b"PK\x03\x04" {
            return Err(not_zip("it does not start like a zip archive".to_string()));
        }
        let archive = ZipArchive::new(BufReader::new(File::open(path).map_err(io)?))
            .map_err(|e| not_zip(format!("its zip directory cannot be read ({e})")))?;

        // torch writes `<name>/data.pkl`, `<name>/data/<key>`, ...
        let mut pickles = Vec::new();
        for name in archive.file_names() {
            let Ok(name) = name else { continue };
            if let Some(prefix) = name.strip_suffix("data.pkl") {
                if prefix.is_empty() || (prefix.ends_with('/') && prefix.matches('/').count() == 1) {
                    pickles.push(prefix.to_string());
                }
            }
        }
        let prefix = match pickles.as_slice() {
            [p] => p.clone(),
            [] => return Err(not_zip("it has no data.pkl record".to_string())),
            _ => return Err(malformed(format!("it has {} data.pkl records", pickles.len()))),
        };
        let mut ckpt = TorchCheckpoint {
            path: path.to_path_buf(),
            archive,
            prefix,
            file_len,
            parsed: Parsed { objs: Vec::new(), root: 0 },
            storages_read: HashSet::new(),
            storage_bytes_read: 0,
            gathered: 0,
        };
        if let Some(order) = ckpt.read_small_entry("byteorder", 16)? {
            if order.trim_ascii() != b"little" {
                return Err(malformed(format!(
                    "its tensors are stored {} (only little-endian is supported)",
                    String::from_utf8_lossy(&order).trim()
                )));
            }
        }
        if cfg!(target_endian = "big") {
            return Err(malformed("this loader needs a little-endian machine".to_string()));
        }
        let pickle = ckpt
            .read_small_entry("data.pkl", MAX_PICKLE_BYTES)?
            .ok_or_else(|| not_zip("its data.pkl record cannot be found".to_string()))?;
        ckpt.parsed = Vm::new(&pickle).run().map_err(|e| match e {
            VmError::Forbidden(global) => TorchPickleError::ForbiddenGlobal { path: shown.clone(), global },
            VmError::Malformed(detail) => TorchPickleError::Malformed { path: shown.clone(), detail },
            VmError::TooLarge(detail) => TorchPickleError::TooLarge { path: shown.clone(), detail },
        })?;
        Ok(ckpt)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn malformed(&self, detail: impl Into<String>) -> TorchPickleError {
        TorchPickleError::Malformed { path: self.shown(), detail: detail.into() }
    }

    /// Reads `<prefix><name>` whole if it exists; it must be stored and at most `max` bytes.
    fn read_small_entry(&mut self, name: &str, max: u64) -> Result<Option<Vec<u8>>, TorchPickleError> {
        let full = format!("{}{name}", self.prefix);
        let Some(index) = self.archive.index_for_name(&full) else { return Ok(None) };
        let size = self.check_entry(index, &full)?;
        if size > max {
            return Err(TorchPickleError::TooLarge {
                path: self.shown(),
                detail: format!("record {full} has {size} bytes (at most {max} accepted)"),
            });
        }
        self.read_entry(index, &full, size).map(Some)
    }

    /// The entry's size after checking that it is stored uncompressed and fits in the file.
    fn check_entry(&self, index: usize, full: &str) -> Result<u64, TorchPickleError> {
        let entry = self.archive.by_index_data(index).map_err(|e| self.malformed(format!("record {full}: {e}")))?;
        if entry.compression() != CompressionMethod::Stored {
            return Err(self.malformed(format!(
                "record {full} is compressed ({:?}); torch.save stores records uncompressed",
                entry.compression()
            )));
        }
        let size = entry.size();
        if entry.compressed_size() != size || size > self.file_len {
            return Err(self.malformed(format!(
                "record {full} declares {size} bytes, more than the file can hold (it may be truncated)"
            )));
        }
        Ok(size)
    }

    /// Reads exactly `size` bytes of a checked entry (the zip reader verifies its CRC).
    fn read_entry(&mut self, index: usize, full: &str, size: u64) -> Result<Vec<u8>, TorchPickleError> {
        let shown = self.shown();
        let bad = |e: &dyn fmt::Display| TorchPickleError::Malformed {
            path: shown.clone(),
            detail: format!("record {full} cannot be read ({e}); the file may be truncated or corrupt"),
        };
        let capacity = usize::try_from(size).map_err(|_| bad(&"it is larger than this machine can address"))?;
        let mut entry = self.archive.by_index(index).map_err(|e| bad(&e))?;
        let mut bytes = Vec::with_capacity(capacity);
        (&mut entry).take(size).read_to_end(&mut bytes).map_err(|e| bad(&e))?;
        if bytes.len() != capacity {
            return Err(bad(&format!("it ends after {} of {size} bytes", bytes.len())));
        }
        // Reading past the end lets the zip reader compare the CRC.
        let mut probe = [0u8; 1];
        let extra = entry.read(&mut probe).map_err(|e| bad(&e))?;
        if extra != 0 {
            return Err(bad(&"it is longer than its declared size"));
        }
        Ok(bytes)
    }

    fn dict_entries(&self, id: ObjId) -> Option<&[(ObjId, ObjId)]> {
        match self.parsed.objs.get(id) {
            Some(Obj::Dict(d)) => Some(d),
            _ => None,
        }
    }

    fn str_of(&self, id: ObjId) -> Option<&str> {
        match self.parsed.objs.get(id) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The string keys of the top-level dict, in file order (empty if the top level is no dict).
    pub fn keys(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.dict_entries(self.parsed.root)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&(k, _)| self.str_of(k))
            .filter(|k| seen.insert(*k))
            .map(str::to_string)
            .collect()
    }

    /// The value under a top-level key (the last one, as Python's dict would keep).
    fn lookup(&self, key: &str) -> Result<ObjId, TorchPickleError> {
        let entries =
            self.dict_entries(self.parsed.root).ok_or_else(|| self.malformed("its top level is not a dict"))?;
        entries.iter().rev().find(|&&(k, _)| self.str_of(k) == Some(key)).map(|&(_, v)| v).ok_or_else(|| {
            let keys = self.keys();
            TorchPickleError::MissingKey {
                path: self.shown(),
                key: key.to_string(),
                available: if keys.is_empty() { "no string keys".to_string() } else { keys.join(", ") },
            }
        })
    }

    /// A small non-tensor structure: the whole pickle (`key` None) or one top-level entry.
    /// Tensors appear as [`Value::Tensor`] (no bytes read). Nesting beyond [`MAX_VALUE_DEPTH`]
    /// or more than [`MAX_VALUE_NODES`] nodes (shared objects count every time) become
    /// [`Value::Other`].
    pub fn value(&self, key: Option<&str>) -> Result<Value, TorchPickleError> {
        let id = match key {
            None => self.parsed.root,
            Some(k) => self.lookup(k)?,
        };
        let mut budget = MAX_VALUE_NODES;
        Ok(self.to_value(id, 0, &mut budget))
    }

    fn to_value(&self, id: ObjId, depth: usize, budget: &mut usize) -> Value {
        if depth >= MAX_VALUE_DEPTH || *budget == 0 {
            return Value::Other("(beyond the depth or size budget)".to_string());
        }
        *budget -= 1;
        let mut seq = |items: &[ObjId]| items.iter().map(|&i| self.to_value(i, depth + 1, budget)).collect();
        match self.parsed.objs.get(id) {
            None => Value::Other("(missing)".to_string()),
            Some(Obj::None) => Value::None,
            Some(Obj::Bool(b)) => Value::Bool(*b),
            Some(Obj::Int(i)) => Value::Int(*i),
            Some(Obj::BigInt) => Value::BigInt,
            Some(Obj::Float(f)) => Value::Float(*f),
            Some(Obj::Str(s)) => Value::Str(s.clone()),
            Some(Obj::Tuple(t)) => Value::Tuple(seq(t)),
            Some(Obj::List(l)) => Value::List(seq(l)),
            Some(Obj::Dict(d)) => {
                let mut out = Vec::with_capacity(d.len().min(*budget));
                for &(k, v) in d {
                    if *budget == 0 {
                        break;
                    }
                    out.push((self.to_value(k, depth + 1, budget), self.to_value(v, depth + 1, budget)));
                }
                Value::Dict(out)
            }
            Some(Obj::Global(g)) => Value::Other(format!("global {g:?}")),
            Some(Obj::Storage(s)) => Value::Other(format!("storage {}", s.key)),
            Some(Obj::Tensor(t)) => Value::Tensor(TensorInfo { dtype: t.dtype, shape: t.shape.clone() }),
        }
    }

    /// The tensors of a state dict on `device`: the top-level dict itself (`key` None, e.g. the
    /// face data `{id, kps}`) or the dict under a top-level key (e.g. `ip_adapter` in
    /// `mask.bin`). Entries whose key is not a string or whose value is not a tensor are skipped;
    /// a repeated key keeps its last value. Tensors keep their file dtype (`bool` as `u8`).
    pub fn state_dict(
        &mut self,
        key: Option<&str>,
        device: &Device,
    ) -> Result<HashMap<String, Tensor>, TorchPickleError> {
        let (id, what) = match key {
            None => (self.parsed.root, "its top level".to_string()),
            Some(k) => (self.lookup(k)?, format!("entry `{k}`")),
        };
        let entries = self.dict_entries(id).ok_or_else(|| self.malformed(format!("{what} is not a dict")))?;
        let mut order: Vec<String> = Vec::new();
        let mut metas: HashMap<String, TensorMeta> = HashMap::new();
        for &(k, v) in entries {
            let (Some(name), Some(Obj::Tensor(meta))) = (self.str_of(k), self.parsed.objs.get(v)) else { continue };
            if metas.insert(name.to_string(), (**meta).clone()).is_none() {
                order.push(name.to_string());
            }
        }
        // Group by storage, in file order, so each storage is read once.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for name in order {
            let storage = metas[&name].storage_key.clone();
            let g = *group_of.entry(storage.clone()).or_insert_with(|| {
                groups.push((storage, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(name);
        }
        let mut out = HashMap::with_capacity(metas.len());
        for (storage, names) in groups {
            self.load_storage(&storage, &names, &metas, device, &mut out)?;
        }
        Ok(out)
    }

    fn load_storage(
        &mut self,
        storage: &str,
        names: &[String],
        metas: &HashMap<String, TensorMeta>,
        device: &Device,
        out: &mut HashMap<String, Tensor>,
    ) -> Result<(), TorchPickleError> {
        let shown = self.shown();
        let bad_tensor = |name: &str, detail: String| TorchPickleError::BadTensor {
            path: shown.clone(),
            name: name.to_string(),
            detail,
        };
        let full = format!("{}data/{storage}", self.prefix);
        let index = self.archive.index_for_name(&full).ok_or_else(|| {
            self.malformed(format!("storage `{storage}` (record {full}, used by `{}`) is missing", names[0]))
        })?;
        let size = self.check_entry(index, &full)?;
        let first_read = !self.storages_read.contains(storage);
        if first_read && self.storage_bytes_read.saturating_add(size) > self.file_len {
            return Err(self.malformed(format!(
                "its storage records add up to more bytes than the file has (record {full} overlaps others)"
            )));
        }

        // Every check before a byte is read.
        let mut plans = Vec::with_capacity(names.len());
        for name in names {
            let meta = &metas[name];
            if meta.storage_bytes != size {
                return Err(bad_tensor(
                    name,
                    format!(
                        "its storage `{storage}` is declared as {} bytes but record {full} has {size} bytes \
                         (the file is truncated or corrupt)",
                        meta.storage_bytes
                    ),
                ));
            }
            let plan = plan(meta, size).map_err(|d| bad_tensor(name, d))?;
            if !plan.contiguous {
                let bytes = (plan.numel as u64).saturating_mul(plan.es as u64);
                self.gathered = self.gathered.saturating_add(bytes);
                if self.gathered > self.file_len {
                    return Err(bad_tensor(
                        name,
                        format!(
                            "its strided layout (shape {:?}, strides {:?}) would expand to more data than the \
                             whole file holds",
                            meta.shape, meta.stride
                        ),
                    ));
                }
            }
            plans.push(plan);
        }
        let bytes = self.read_entry(index, &full, size)?;
        if first_read {
            self.storages_read.insert(storage.to_string());
            self.storage_bytes_read += size;
        }
        let candle = |name: &str, e: candle_core::Error| bad_tensor(name, e.to_string());
        let mut whole: HashMap<DType, Tensor> = HashMap::new();
        for (name, plan) in names.iter().zip(plans) {
            let meta = &metas[name];
            let tensor = if plan.numel == 0 {
                Tensor::zeros(meta.shape.as_slice(), plan.dtype, device).map_err(|e| candle(name, e))?
            } else if plan.contiguous {
                let all = match whole.get(&plan.dtype) {
                    Some(t) => t.clone(),
                    None => {
                        let n = bytes.len() / plan.es;
                        let t = Tensor::from_raw_buffer(&bytes[..n * plan.es], plan.dtype, &[n], device)
                            .map_err(|e| candle(name, e))?;
                        whole.insert(plan.dtype, t.clone());
                        t
                    }
                };
                all.narrow(0, meta.offset, plan.numel)
                    .and_then(|t| t.reshape(meta.shape.as_slice()))
                    .map_err(|e| candle(name, e))?
            } else {
                let data = gather(&bytes, meta, &plan)
                    .ok_or_else(|| bad_tensor(name, "its strided layout cannot be read".to_string()))?;
                Tensor::from_raw_buffer(&data, plan.dtype, &meta.shape, device).map_err(|e| candle(name, e))?
            };
            out.insert(name.clone(), tensor);
        }
        Ok(())
    }
}

/// Reads as many bytes as are there, up to `buf.len()`.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One state dict from a checkpoint (see [`TorchCheckpoint::state_dict`]).
pub fn read_state_dict(
    path: &Path,
    key: Option<&str>,
    device: &Device,
) -> Result<HashMap<String, Tensor>, TorchPickleError> {
    TorchCheckpoint::open(path)?.state_dict(key, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Parsed, VmError> {
        Vm::new(bytes).run()
    }

    fn meta(shape: &[usize], stride: &[usize], offset: usize, storage_numel: u64) -> TensorMeta {
        TensorMeta {
            storage_key: "0".into(),
            storage_bytes: storage_numel * 4,
            dtype: TorchDType::F32,
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        }
    }

    #[test]
    fn allow_list_is_what_the_vm_accepts() {
        for g in ALLOWED_GLOBALS {
            let (module, name) = g.rsplit_once('.').unwrap();
            assert!(allowed_global(module, name).is_some(), "{g}");
        }
        assert_eq!(allowed_global("torch", "float32"), Some(Global::Dtype(TorchDType::F32)));
        for (m, n) in
            [("posix", "system"), ("os", "system"), ("builtins", "eval"), ("torch", "load"), ("torch", "Storage")]
        {
            assert!(allowed_global(m, n).is_none(), "{m}.{n}");
        }
    }

    #[test]
    fn forbidden_globals_stop_the_interpreter() {
        match run(b"\x80\x02cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwned\x85R.") {
            Err(VmError::Forbidden(g)) => assert_eq!(g, "posix.system"),
            other => panic!("{other:?}"),
        }
        // protocol 4 spelling
        match run(b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93.") {
            Err(VmError::Forbidden(g)) => assert_eq!(g, "builtins.eval"),
            other => panic!("{other:?}"),
        }
        match run(b"(ios\nsystem\n.") {
            Err(VmError::Forbidden(g)) => assert_eq!(g, "os.system"),
            other => panic!("{other:?}"),
        }
        match run(b"cbad\xffmod\nx\n.") {
            Err(VmError::Malformed(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_hold() {
        // a string longer than the data
        assert!(matches!(run(b"X\xff\xff\xff\x7f"), Err(VmError::TooLarge(_))));
        assert!(matches!(run(b"X\x10\x00\x00\x00abc"), Err(VmError::Malformed(_))));
        // memo read before write, stack underflow, odd SETITEMS, unknown opcode
        assert!(matches!(run(b"j\xff\xff\xff\xff."), Err(VmError::Malformed(_))));
        assert!(matches!(run(b"t."), Err(VmError::Malformed(_))));
        assert!(matches!(run(b"}(K\x01u."), Err(VmError::Malformed(_))));
        assert!(matches!(run(b"\xfe"), Err(VmError::Malformed(_))));
        assert!(matches!(run(b""), Err(VmError::Malformed(_))));
        // deep MARK nesting
        assert!(matches!(run(&[b'('; MAX_MARK_DEPTH + 1]), Err(VmError::TooLarge(_))));
        // a billion-laughs style list of itself only costs pointers, and the stack is capped
        let mut p = b"]q\x00".to_vec();
        p.extend(std::iter::repeat_n(&b"h\x00"[..], MAX_STACK + 1).flatten());
        assert!(matches!(run(&p), Err(VmError::TooLarge(_))));
        // self-referencing list is fine (no recursion in the interpreter)
        let parsed = run(b"]q\x00h\x00a.").unwrap();
        assert!(matches!(&parsed.objs[parsed.root], Obj::List(l) if l == &vec![parsed.root]));
    }

    #[test]
    fn scalars_decode() {
        let p = run(b"(J\xfb\xff\xff\xffK\x07M\x00\x01\x8a\x02\x00\x80\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01G?\xf8\x00\x00\x00\x00\x00\x00\x88\x89Nt.")
            .unwrap();
        let Obj::Tuple(items) = &p.objs[p.root] else { panic!() };
        let got: Vec<String> = items.iter().map(|&i| format!("{:?}", p.objs[i])).collect();
        assert_eq!(
            got,
            [
                "Int(-5)",
                "Int(7)",
                "Int(256)",
                "Int(-32768)",
                "BigInt",
                "Float(1.5)",
                "Bool(true)",
                "Bool(false)",
                "None"
            ]
        );
    }

    #[test]
    fn layouts_are_checked_before_reading() {
        let p = plan(&meta(&[2, 3], &[3, 1], 0, 6), 24).unwrap();
        assert!(p.contiguous && p.numel == 6);
        // view at an offset, size-1 dims with odd strides are still contiguous
        assert!(plan(&meta(&[1, 3], &[99, 1], 3, 6), 24).unwrap().contiguous);
        // transposed
        let t = meta(&[3, 2], &[1, 3], 0, 6);
        let p = plan(&t, 24).unwrap();
        assert!(!p.contiguous);
        let bytes: Vec<u8> = (0..6u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let g = gather(&bytes, &t, &p).unwrap();
        let vals: Vec<f32> = g.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals, [0., 3., 1., 4., 2., 5.]);
        // expanded (stride 0)
        let e = meta(&[2, 3], &[0, 1], 0, 3);
        let p = plan(&e, 12).unwrap();
        let g = gather(&bytes[..12], &e, &p).unwrap();
        assert_eq!(g.len(), 24);
        // too big for the storage, offset past the end, overflowing shapes
        let msg = plan(&meta(&[2, 3], &[3, 1], 1, 6), 24).unwrap_err();
        assert!(msg.contains("reaches element 6") && msg.contains("holds 6"), "{msg}");
        assert!(plan(&meta(&[0], &[1], 7, 6), 24).is_err());
        assert!(plan(&meta(&[usize::MAX, 2], &[1, 1], 0, 6), 24).is_err());
        assert!(plan(&meta(&[2, 2], &[usize::MAX, 1], 0, 6), 24).is_err());
        let mut i8m = meta(&[1], &[1], 0, 1);
        i8m.dtype = TorchDType::I8;
        assert!(plan(&i8m, 1).unwrap_err().contains("torch.int8"));
    }
}
