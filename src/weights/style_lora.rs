//! User style LoRAs for SDXL, merged into the base weights at load time.
//!
//! Model sites publish SDXL LoRAs in a few key layouts; all of these are read, for the UNet and
//! both text encoders:
//!
//! - kohya / sd-scripts (also LyCORIS LoCon, ComfyUI): `lora_unet_<module with _>.lora_down.weight`
//!   and `.lora_up.weight` (plus `.lora_mid.weight` for a Tucker-decomposed conv), `lora_te1_…`
//!   (CLIP-L), `lora_te2_…` (bigG), `lora_te_…` (= te1); one `<stem>.alpha` per module. Dotted
//!   SGM names under `diffusion_model.` / `model.diffusion_model.` (some extraction tools) too.
//! - diffusers / PEFT: `unet.<module>.lora_A.weight` and `.lora_B.weight`, `text_encoder.…`,
//!   `text_encoder_2.…`; alphas (`lora_alpha`, `alpha_pattern`, `use_rslora`) only in the
//!   safetensors metadata entry `lora_adapter_metadata`, else alpha = rank.
//! - older diffusers: `unet.<module>.lora.down.weight`, `…attn1.processor.to_q_lora.down.weight`,
//!   `…mlp.fc1.lora_linear_layer.down.weight`; `<stem>.alpha` if present.
//!
//! sd-scripts trains SDXL on the original Stability (SGM) UNet, so its UNet names use that layout
//! (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`); other trainers write diffusers
//! names (`lora_unet_down_blocks_1_attentions_0_…`). Both are mapped to diffusers names, the ones
//! our models ask for ([`sgm_unet_module_to_diffusers`] is the inverse of
//! [`super::sgm::unet_key_to_sgm`], checked against it by `tests/style_lora.rs`). Underscores are
//! turned back into dots by a fixed vocabulary of the multi-word names SDXL modules have
//! (`transformer_blocks`, `to_out`, `time_emb_proj`, …), since the underscore form is lossy.
//!
//! The delta of one module is `ΔW = (alpha / rank) · up @ down` (conv LoRAs: a kxk conv down to
//! `rank` channels, then a 1x1 conv up; reshaped to the conv weight), where a missing alpha means
//! `alpha = rank`, as in diffusers/PEFT. A stack of LoRAs with user weights gives
//! `W + Σ weightᵢ · ΔWᵢ`, computed in f32 and then cast to the model dtype. This is what diffusers
//! computes for `pipe.load_lora_weights(...)` + `set_adapters(..., adapter_weights=...)` or
//! `fuse_lora(lora_scale=...)`; `tools/parity/gen_style_lora.py` makes the references.
//!
//! Kohya alphas are applied per module, as sd-scripts (the trainer that writes them), ComfyUI and
//! A1111 do, and an alpha of 0 means "no alpha" as in sd-scripts. diffusers 0.42.1 differs in two
//! corner cases the fixtures therefore avoid (see the generator's docstring): when alphas differ
//! between modules it uses the most common one for the UNet attention projections and all
//! text-encoder modules, and it takes alpha 0 literally.
//!
//! Merging at load time keeps inference as fast as without a LoRA and needs no LoRA-aware layers:
//! [`LoraMergedStore`] wraps the [`TensorStore`] a component is loaded from (diffusers folder or a
//! single-file checkpoint, with any tensor map) and adds the deltas as the model asks for each
//! weight. Changing the LoRAs or their weights (per story or per panel) means building the UNet
//! and text encoders again from the still-mapped files; the parsed [`StyleLora`]s can be kept.
//!
//! Not supported, with an error saying so: LyCORIS LoHa / LoKr / OFT / full-diff / GLoRA, DoRA,
//! LoRAs with a bias on `lora_B`, and PEFT rank/alpha patterns that are real regular expressions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use thiserror::Error;

use super::safetensors_header::read_header;
use super::store::TensorStore;

/// `layers_per_block` of SDXL's UNet (and of every SDXL fine-tune): the SGM block numbering of
/// kohya UNet names depends on it.
pub const SDXL_LAYERS_PER_BLOCK: usize = 2;

/// The safetensors metadata entry where diffusers stores the PEFT `LoraConfig` of each component
/// (flattened as `"unet.lora_alpha"`, `"text_encoder.alpha_pattern"`, …).
pub const PEFT_METADATA_KEY: &str = "lora_adapter_metadata";

/// How many unmatched keys an error message names.
const EXAMPLES: usize = 5;

/// The SDXL models a LoRA can change. The names are diffusers' folder names and key prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraComponent {
    Unet,
    /// CLIP-L (`text_encoder`, kohya `lora_te1_`).
    TextEncoder,
    /// OpenCLIP bigG (`text_encoder_2`, kohya `lora_te2_`).
    TextEncoder2,
}

impl LoraComponent {
    pub const ALL: [LoraComponent; 3] = [LoraComponent::Unet, LoraComponent::TextEncoder, LoraComponent::TextEncoder2];

    /// `unet`, `text_encoder` or `text_encoder_2`.
    pub fn name(self) -> &'static str {
        match self {
            LoraComponent::Unet => "unet",
            LoraComponent::TextEncoder => "text_encoder",
            LoraComponent::TextEncoder2 => "text_encoder_2",
        }
    }

    /// The inverse of [`Self::name`].
    pub fn from_name(name: &str) -> Option<LoraComponent> {
        LoraComponent::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The key naming a LoRA tensor was found under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraFormat {
    /// `lora_down` / `lora_up` / `alpha` (sd-scripts, LyCORIS LoCon, ComfyUI).
    Kohya,
    /// `lora_A` / `lora_B` (PEFT, diffusers since 0.22).
    Peft,
    /// `lora.down` / `to_q_lora.down` / `lora_linear_layer.down` (diffusers attention processors).
    DiffusersLegacy,
}

/// Which tensor of a LoRA module a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraPart {
    /// `[rank, in]` or `[rank, in, kh, kw]`.
    Down,
    /// `[out, rank]` or `[out, rank, 1, 1]`.
    Up,
    /// LoCon Tucker core `[rank, rank, kh, kw]` (then `down` is `[rank, in, 1, 1]`).
    Mid,
    /// The scalar alpha.
    Alpha,
}

/// A parsed tensor key: which module of which model it belongs to, in diffusers naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraKey {
    pub component: LoraComponent,
    /// The module path the model uses, without `.weight` (`down_blocks.1.attentions.0.proj_in`,
    /// `text_model.encoder.layers.3.self_attn.q_proj`).
    pub module: String,
    pub part: LoraPart,
    pub format: LoraFormat,
}

#[derive(Debug, Error)]
pub enum LoraError {
    #[error("cannot read the LoRA file {path}: {detail}")]
    Read { path: String, detail: String },
    #[error(
        "{path}: unsupported LoRA type {kind} (key {key}); StoryMaker Studio applies plain LoRA and LoCon files \
         (lora_down/lora_up or lora_A/lora_B weights)"
    )]
    Unsupported { path: String, kind: String, key: String },
    #[error(
        "{path}: no SDXL LoRA weights recognised among its {total} tensors (e.g. {}); expected kohya keys \
         (lora_unet_…, lora_te1_…, lora_te2_… with .lora_down.weight/.lora_up.weight) or diffusers/PEFT keys \
         (unet.….lora_A.weight/.lora_B.weight)",
        examples.join(", ")
    )]
    NothingRecognised { path: String, total: usize, examples: Vec<String> },
    #[error("{path}: LoRA module {module} ({key}): {detail}")]
    BadModule { path: String, module: String, key: String, detail: String },
    #[error(
        "{path} does not fit this SDXL {}: {detail}; is it a LoRA for another base model (SD 1.5, SD 2, SD 3, Flux)?",
        component.name()
    )]
    WrongModel { path: String, component: LoraComponent, detail: String },
}

/// One module's low-rank update.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// `[rank, in]` or `[rank, in, kh, kw]`, in the file's dtype, on the CPU.
    pub down: Tensor,
    /// `[out, rank]` or `[out, rank, 1, 1]`.
    pub up: Tensor,
    /// Tucker core `[rank, rank, kh, kw]` of a LoCon conv (`down` is then `[rank, in, 1, 1]`).
    pub mid: Option<Tensor>,
    pub rank: usize,
    /// The alpha in effect (the file's, PEFT's `lora_alpha`/`alpha_pattern`, or `rank`).
    pub alpha: f64,
    /// The factor of `up @ down`: `alpha / rank` (`alpha / √rank` for rsLoRA).
    pub scale: f64,
    /// The file key of `down` (for messages).
    pub key: String,
}

impl LoraModule {
    /// The shape of the weight this module changes: `[out, in]` or `[out, in, kh, kw]`.
    /// The fields are public for inspection; a module built by hand with inconsistent shapes gets
    /// a shape here that [`Self::delta`] then refuses, rather than a panic.
    pub fn delta_shape(&self) -> Vec<usize> {
        let dim = |t: &Tensor, i: usize| t.dims().get(i).copied().unwrap_or(0);
        let (out, cin) = (dim(&self.up, 0), dim(&self.down, 1));
        match (&self.mid, self.down.rank()) {
            (Some(mid), _) => vec![out, cin, dim(mid, 2), dim(mid, 3)],
            (None, 4) => vec![out, cin, dim(&self.down, 2), dim(&self.down, 3)],
            _ => vec![out, cin],
        }
    }

    /// `scale · up @ down` in f32 on `dev`, shaped [`Self::delta_shape`].
    pub fn delta(&self, dev: &Device) -> candle_core::Result<Tensor> {
        let r = self.rank;
        let f32_on = |t: &Tensor| t.to_device(dev).and_then(|t| t.to_dtype(DType::F32));
        let up = f32_on(&self.up)?.reshape((self.up.dim(0)?, r))?;
        let down = f32_on(&self.down)?;
        let down = match &self.mid {
            None => down.reshape((r, ()))?,
            Some(mid) => {
                // D[i, c, h, w] = Σ_j mid[i, j, h, w] · down[j, c]: the Tucker core's second index
                // meets `down`, its first meets `up` (LyCORIS `rebuild_tucker`).
                let (mi, mj, kh, kw) = mid.dims4()?;
                let mid = f32_on(mid)?.permute((0, 2, 3, 1))?.contiguous()?.reshape((mi * kh * kw, mj))?;
                let d = mid.matmul(&down.reshape((mj, ()))?)?; // [i·kh·kw, in]
                let cin = d.dim(1)?;
                d.reshape((mi, kh, kw, cin))?.permute((0, 3, 1, 2))?.contiguous()?.reshape((mi, ()))?
            }
        };
        up.matmul(&down)?.reshape(self.delta_shape())?.affine(self.scale, 0.0)
    }
}

/// A parsed LoRA file: per component, the modules it changes (diffusers names).
#[derive(Debug, Clone)]
pub struct StyleLora {
    path: PathBuf,
    modules: BTreeMap<(LoraComponent, String), LoraModule>,
    formats: Vec<LoraFormat>,
    warnings: Vec<String>,
}

/// The tensors found for one module while reading a file.
#[derive(Default)]
struct Parts {
    down: Option<(String, Tensor)>,
    up: Option<(String, Tensor)>,
    mid: Option<(String, Tensor)>,
    alpha: Option<(String, Tensor)>,
}

impl StyleLora {
    /// Reads a `.safetensors` LoRA. Keys that are not LoRA weights of the SDXL UNet or text
    /// encoders are listed in [`Self::warnings`]; a file with none that are is an error.
    pub fn load(path: &Path) -> Result<StyleLora, LoraError> {
        let read = |detail: String| LoraError::Read { path: path.display().to_string(), detail };
        let header = read_header(path).map_err(|e| read(e.to_string()))?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| read(e.to_string()))?;
        StyleLora::from_tensors(path, tensors, &header.metadata)
    }

    /// [`Self::load`] for tensors already in memory; `path` is used in messages and
    /// `metadata` is the safetensors `__metadata__` (where PEFT alphas live).
    pub fn from_tensors(
        path: &Path,
        tensors: HashMap<String, Tensor>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<StyleLora, LoraError> {
        let label = path.display().to_string();
        let peft = PeftConfigs::parse(&label, metadata)?;
        let total = tensors.len();
        let mut names: Vec<String> = tensors.keys().cloned().collect();
        names.sort();
        let mut tensors = tensors;
        let mut unknown = Vec::new();
        let mut groups: BTreeMap<(LoraComponent, String), Parts> = BTreeMap::new();
        let mut formats = Vec::new();
        for key in names {
            if let Some(kind) = unsupported_kind(&key) {
                return Err(LoraError::Unsupported { path: label, kind: kind.to_string(), key });
            }
            let Some(parsed) = parse_key(&key) else {
                unknown.push(key);
                continue;
            };
            let Some(t) = tensors.remove(&key) else { continue };
            if parsed.part != LoraPart::Alpha && !formats.contains(&parsed.format) {
                formats.push(parsed.format);
            }
            let parts = groups.entry((parsed.component, parsed.module.clone())).or_default();
            let slot = match parsed.part {
                LoraPart::Down => &mut parts.down,
                LoraPart::Up => &mut parts.up,
                LoraPart::Mid => &mut parts.mid,
                LoraPart::Alpha => &mut parts.alpha,
            };
            if let Some((other, _)) = slot {
                return Err(LoraError::BadModule {
                    path: label,
                    module: parsed.module,
                    detail: format!("two tensors for the same part: {other} and {key}"),
                    key,
                });
            }
            *slot = Some((key, t));
        }
        formats.sort();

        let mut warnings: Vec<String> =
            unknown.iter().map(|k| format!("{k}: not a LoRA weight of the SDXL UNet or text encoders")).collect();
        let mut modules = BTreeMap::new();
        for ((component, module), parts) in groups {
            let half = match (&parts.down, &parts.up, &parts.mid, &parts.alpha) {
                (Some(_), Some(_), _, _) => None,
                (Some((k, _)), None, _, _) => Some((k, "its up weight")),
                (None, Some((k, _)), _, _) => Some((k, "its down weight")),
                (None, None, Some((k, _)), _) | (None, None, None, Some((k, _))) => Some((k, "down and up weights")),
                (None, None, None, None) => continue,
            };
            if let Some((key, missing)) = half {
                warnings.push(format!("{key}: ignored, the file has no {missing}"));
                continue;
            }
            let (Some(down), Some(up)) = (parts.down, parts.up) else { continue };
            let m = build_module(&label, component, &module, down, up, parts.mid, parts.alpha, &peft)?;
            modules.insert((component, module), m);
        }
        if modules.is_empty() {
            let examples = unknown.iter().take(EXAMPLES).cloned().collect::<Vec<_>>();
            let examples =
                if examples.is_empty() { warnings.iter().take(EXAMPLES).cloned().collect() } else { examples };
            return Err(LoraError::NothingRecognised { path: label, total, examples });
        }
        Ok(StyleLora { path: path.to_path_buf(), modules, formats, warnings })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key formats found (usually one).
    pub fn formats(&self) -> &[LoraFormat] {
        &self.formats
    }

    /// Keys that were skipped (not LoRA weights of SDXL, or half a module), one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of modules, all components together.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The modules of `component`, by diffusers module name.
    pub fn modules(&self, component: LoraComponent) -> impl Iterator<Item = (&str, &LoraModule)> {
        self.modules.iter().filter(move |((c, _), _)| *c == component).map(|((_, name), m)| (name.as_str(), m))
    }

    pub fn module(&self, component: LoraComponent, name: &str) -> Option<&LoraModule> {
        self.modules.get(&(component, name.to_string()))
    }
}

/// Checks the tensors of one module and resolves its alpha.
#[allow(clippy::too_many_arguments)]
fn build_module(
    path: &str,
    component: LoraComponent,
    module: &str,
    (down_key, down): (String, Tensor),
    (up_key, up): (String, Tensor),
    mid: Option<(String, Tensor)>,
    alpha: Option<(String, Tensor)>,
    peft: &PeftConfigs,
) -> Result<LoraModule, LoraError> {
    let bad = |key: &str, detail: String| LoraError::BadModule {
        path: path.to_string(),
        module: module.to_string(),
        key: key.to_string(),
        detail,
    };
    let (d, u) = (down.dims().to_vec(), up.dims().to_vec());
    if !(d.len() == 2 || d.len() == 4) || d[0] == 0 {
        return Err(bad(&down_key, format!("down weight has shape {d:?}; expected [rank, in] or [rank, in, kh, kw]")));
    }
    let rank = d[0];
    if !(u.len() == 2 || u.len() == 4) || u.iter().skip(2).any(|&x| x != 1) {
        return Err(bad(&up_key, format!("up weight has shape {u:?}; expected [out, rank] or [out, rank, 1, 1]")));
    }
    let mid = match mid {
        None => {
            if u[1] != rank {
                return Err(bad(&up_key, format!("up weight {u:?} does not match the rank {rank} of down {d:?}")));
            }
            None
        }
        Some((mid_key, m)) => {
            let md = m.dims().to_vec();
            let core_ok = md.len() == 4 && md[0] == u[1] && md[1] == rank;
            if !core_ok || d.len() != 4 || d[2] != 1 || d[3] != 1 {
                let ur = u[1];
                let detail = format!(
                    "Tucker core {md:?} does not fit down {d:?} and up {u:?} \
                     (expected [{ur}, {rank}, kh, kw] with a 1x1 down)"
                );
                return Err(bad(&mid_key, detail));
            }
            Some(m)
        }
    };
    let (alpha, rslora) = match alpha {
        Some((alpha_key, t)) => {
            let v = t
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F64))
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(|e| bad(&alpha_key, e.to_string()))?;
            let [a] = v.as_slice() else {
                return Err(bad(&alpha_key, format!("alpha has {} values, expected one", v.len())));
            };
            // sd-scripts treats alpha 0 as "no alpha" (= rank).
            (if *a == 0.0 || !a.is_finite() { rank as f64 } else { *a }, false)
        }
        None => match peft.get(component) {
            Some(cfg) => (cfg.alpha_for(module).unwrap_or(rank as f64), cfg.use_rslora),
            None => (rank as f64, false),
        },
    };
    let scale = if rslora { alpha / (rank as f64).sqrt() } else { alpha / rank as f64 };
    Ok(LoraModule { down, up, mid, rank, alpha, scale, key: down_key })
}

// ---------------------------------------------------------------------------------------------
// PEFT metadata
// ---------------------------------------------------------------------------------------------

/// The parts of a PEFT `LoraConfig` that decide a module's scale.
#[derive(Debug, Default)]
struct PeftConfig {
    lora_alpha: Option<f64>,
    /// (pattern, alpha) in the order PEFT tries them (JSON object order, which diffusers writes
    /// sorted).
    alpha_pattern: Vec<(String, f64)>,
    use_rslora: bool,
}

impl PeftConfig {
    /// PEFT's rule: the first `alpha_pattern` key matching the module, else `lora_alpha`.
    fn alpha_for(&self, module: &str) -> Option<f64> {
        // transformers 5 names CLIP modules without `text_model.`; patterns may be written either way.
        let short = module.strip_prefix("text_model.");
        for (pattern, alpha) in &self.alpha_pattern {
            if peft_pattern_matches(pattern, module) || short.is_some_and(|s| peft_pattern_matches(pattern, s)) {
                return Some(*alpha);
            }
        }
        self.lora_alpha
    }
}

#[derive(Debug, Default)]
struct PeftConfigs(HashMap<LoraComponent, PeftConfig>);

impl PeftConfigs {
    fn get(&self, c: LoraComponent) -> Option<&PeftConfig> {
        self.0.get(&c)
    }

    /// Reads `lora_adapter_metadata` (absent: no configs, every alpha defaults to the rank).
    fn parse(path: &str, metadata: &BTreeMap<String, String>) -> Result<PeftConfigs, LoraError> {
        let Some(raw) = metadata.get(PEFT_METADATA_KEY) else { return Ok(PeftConfigs::default()) };
        let unsupported = |kind: &str, key: &str| LoraError::Unsupported {
            path: path.to_string(),
            kind: kind.to_string(),
            key: format!("metadata {PEFT_METADATA_KEY}: {key}"),
        };
        let json: serde_json::Value = serde_json::from_str(raw).map_err(|e| LoraError::Read {
            path: path.to_string(),
            detail: format!("metadata {PEFT_METADATA_KEY} is not JSON: {e}"),
        })?;
        let Some(obj) = json.as_object() else { return Ok(PeftConfigs::default()) };
        let mut out = PeftConfigs::default();
        for c in LoraComponent::ALL {
            let get = |k: &str| obj.get(&format!("{}.{k}", c.name()));
            if !obj.keys().any(|k| k.starts_with(&format!("{}.", c.name()))) {
                continue;
            }
            if get("use_dora").and_then(|v| v.as_bool()) == Some(true) {
                return Err(unsupported("DoRA (PEFT use_dora)", &format!("{}.use_dora", c.name())));
            }
            let mut cfg = PeftConfig {
                lora_alpha: get("lora_alpha").and_then(|v| v.as_f64()),
                use_rslora: get("use_rslora").and_then(|v| v.as_bool()).unwrap_or(false),
                alpha_pattern: Vec::new(),
            };
            let patterns = ["alpha_pattern", "rank_pattern"];
            for (which, field) in patterns.iter().enumerate() {
                let Some(map) = get(field).and_then(|v| v.as_object()) else { continue };
                for (pattern, v) in map {
                    if !peft_pattern_supported(pattern) {
                        return Err(unsupported(
                            "PEFT rank/alpha pattern with a regular expression",
                            &format!("{}.{field}: {pattern}", c.name()),
                        ));
                    }
                    if which == 0 {
                        if let Some(a) = v.as_f64() {
                            cfg.alpha_pattern.push((pattern.clone(), a));
                        }
                    }
                }
            }
            out.0.insert(c, cfg);
        }
        Ok(out)
    }
}

/// Patterns we can evaluate exactly: module-name text where `.` is the regex wildcard (it also
/// matches a literal dot), with an optional leading `^`.
fn peft_pattern_supported(pattern: &str) -> bool {
    let body = pattern.strip_prefix('^').unwrap_or(pattern);
    !body.is_empty() && !body.contains(['*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\', '$', '^'])
}

/// PEFT's `re.match(rf"(.*\.)?({pattern})$", module)` for the patterns of
/// [`peft_pattern_supported`]: the pattern matches the whole module name or a suffix starting
/// after a dot; a leading `^` allows only the whole name.
pub fn peft_pattern_matches(pattern: &str, module: &str) -> bool {
    let (anchored, body) = match pattern.strip_prefix('^') {
        Some(b) => (true, b),
        None => (false, pattern),
    };
    let same =
        |tail: &str| tail.len() == body.len() && body.bytes().zip(tail.bytes()).all(|(p, m)| p == b'.' || p == m);
    if same(module) {
        return true;
    }
    !anchored && module.match_indices('.').any(|(i, _)| same(&module[i + 1..]))
}

// ---------------------------------------------------------------------------------------------
// key names
// ---------------------------------------------------------------------------------------------

/// Key endings that mark LoRA variants we do not apply, with their names for the error.
fn unsupported_kind(key: &str) -> Option<&'static str> {
    let last = key.rsplit_once('.').map(|(_, l)| l).unwrap_or(key);
    if key.contains(".hada_") {
        return Some("LoHa (LyCORIS)");
    }
    if key.contains(".lokr_") {
        return Some("LoKr (LyCORIS)");
    }
    if key.contains(".oft_") {
        return Some("OFT / BOFT");
    }
    if last == "dora_scale" || key.contains(".lora_magnitude_vector") {
        return Some("DoRA");
    }
    if last == "diff" || last == "diff_b" {
        return Some("full weight difference (LyCORIS full)");
    }
    if [".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight"].iter().any(|s| key.ends_with(s)) {
        return Some("GLoRA (LyCORIS)");
    }
    if last == "w_norm" || last == "b_norm" {
        return Some("norm-layer fine-tuning (LyCORIS)");
    }
    if key.ends_with(".lora_B.bias") || key.ends_with(".lora_up.bias") {
        return Some("LoRA with a bias on its up weight (PEFT lora_bias)");
    }
    None
}

/// (suffix, part, format, legacy `_lora` attention naming).
const SUFFIXES: [(&str, LoraPart, LoraFormat, bool); 12] = [
    (".lora_down.weight", LoraPart::Down, LoraFormat::Kohya, false),
    (".lora_up.weight", LoraPart::Up, LoraFormat::Kohya, false),
    (".lora_mid.weight", LoraPart::Mid, LoraFormat::Kohya, false),
    (".lora_A.weight", LoraPart::Down, LoraFormat::Peft, false),
    (".lora_B.weight", LoraPart::Up, LoraFormat::Peft, false),
    (".lora_linear_layer.down.weight", LoraPart::Down, LoraFormat::DiffusersLegacy, false),
    (".lora_linear_layer.up.weight", LoraPart::Up, LoraFormat::DiffusersLegacy, false),
    (".lora.down.weight", LoraPart::Down, LoraFormat::DiffusersLegacy, false),
    (".lora.up.weight", LoraPart::Up, LoraFormat::DiffusersLegacy, false),
    ("_lora.down.weight", LoraPart::Down, LoraFormat::DiffusersLegacy, true),
    ("_lora.up.weight", LoraPart::Up, LoraFormat::DiffusersLegacy, true),
    (".alpha", LoraPart::Alpha, LoraFormat::Kohya, false),
];

const KOHYA_PREFIXES: [(&str, LoraComponent); 4] = [
    ("lora_unet_", LoraComponent::Unet),
    ("lora_te1_", LoraComponent::TextEncoder),
    ("lora_te_", LoraComponent::TextEncoder),
    ("lora_te2_", LoraComponent::TextEncoder2),
];

/// Multi-word names in SDXL UNet module paths (diffusers and SGM), to undo kohya's `.` → `_`.
const UNET_WORDS: [&str; 28] = [
    "down_blocks",
    "up_blocks",
    "mid_block",
    "input_blocks",
    "middle_block",
    "output_blocks",
    "transformer_blocks",
    "proj_in",
    "proj_out",
    "to_q",
    "to_k",
    "to_v",
    "to_out",
    "conv_in",
    "conv_out",
    "conv_shortcut",
    "conv_norm_out",
    "time_emb_proj",
    "time_embedding",
    "add_embedding",
    "linear_1",
    "linear_2",
    "in_layers",
    "out_layers",
    "emb_layers",
    "skip_connection",
    "time_embed",
    "label_emb",
];

/// Multi-word names in transformers CLIP text-model paths.
const CLIP_WORDS: [&str; 12] = [
    "text_model",
    "self_attn",
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "text_projection",
    "final_layer_norm",
    "layer_norm1",
    "layer_norm2",
    "token_embedding",
    "position_embedding",
];

/// Rebuilds a dotted module path from kohya's underscore form, joining the tokens of a known
/// multi-word name (longest match first) and putting dots everywhere else.
fn underscores_to_path(s: &str, words: &[&str]) -> String {
    let tokens: Vec<&str> = s.split('_').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let best = words
            .iter()
            .map(|w| w.split('_').collect::<Vec<_>>())
            .filter(|w| tokens[i..].starts_with(w))
            .max_by_key(|w| w.len());
        match best {
            Some(w) => {
                out.push(w.join("_"));
                i += w.len();
            }
            None => {
                out.push(tokens[i].to_string());
                i += 1;
            }
        }
    }
    out.join(".")
}

/// First segments of SGM (original Stability) UNet module paths.
const SGM_ROOTS: [&str; 6] = ["input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out"];

/// First segments of diffusers UNet module paths (a LoRA without the `unet.` prefix).
const DIFFUSERS_UNET_ROOTS: [&str; 7] =
    ["down_blocks", "mid_block", "up_blocks", "conv_in", "conv_out", "time_embedding", "add_embedding"];

/// The SGM resnet sub-modules and their diffusers names.
const SGM_RESNET: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
];

fn sgm_resnet_part(rest: &str) -> Option<String> {
    SGM_RESNET.iter().find_map(|(from, to)| {
        let tail = rest.strip_prefix(from)?;
        (tail.is_empty() || tail.starts_with('.')).then(|| format!("{to}{tail}"))
    })
}

fn split_index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// Maps an SGM UNet module path (no `model.diffusion_model.` prefix, no `.weight`) to its
/// diffusers path; the inverse of [`super::sgm::unet_key_to_sgm`] for modules. `None` if the
/// path is not an SDXL UNet module. Which SGM `output_blocks` entry is an upsampler is read from
/// the path itself (`.conv` at sub-index 1 or 2), so no up-block types are needed.
pub fn sgm_unet_module_to_diffusers(path: &str, layers_per_block: usize) -> Option<String> {
    let n = layers_per_block + 1;
    const FIXED: [(&str, &str); 7] = [
        ("input_blocks.0.0", "conv_in"),
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("label_emb.0.0", "add_embedding.linear_1"),
        ("label_emb.0.2", "add_embedding.linear_2"),
        ("out.0", "conv_norm_out"),
        ("out.2", "conv_out"),
    ];
    for (from, to) in FIXED {
        if let Some(tail) = path.strip_prefix(from) {
            if tail.is_empty() || tail.starts_with('.') {
                return Some(format!("{to}{tail}"));
            }
        }
    }
    if let Some(rest) = path.strip_prefix("input_blocks.") {
        let (b, rest) = split_index(rest)?;
        let (sub, rest) = split_index(rest)?;
        let (i, j) = (b.checked_sub(1)? / n, b.checked_sub(1)? % n);
        return match (sub, j == layers_per_block) {
            (0, true) => {
                let tail = rest.strip_prefix("op")?;
                (tail.is_empty() || tail.starts_with('.')).then(|| format!("down_blocks.{i}.downsamplers.0.conv{tail}"))
            }
            (0, false) => Some(format!("down_blocks.{i}.resnets.{j}.{}", sgm_resnet_part(rest)?)),
            (1, false) => Some(format!("down_blocks.{i}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    if let Some(rest) = path.strip_prefix("middle_block.") {
        let (sub, rest) = split_index(rest)?;
        return match sub {
            0 => Some(format!("mid_block.resnets.0.{}", sgm_resnet_part(rest)?)),
            1 => Some(format!("mid_block.attentions.0.{rest}")),
            2 => Some(format!("mid_block.resnets.1.{}", sgm_resnet_part(rest)?)),
            _ => None,
        };
    }
    if let Some(rest) = path.strip_prefix("output_blocks.") {
        let (b, rest) = split_index(rest)?;
        let (sub, rest) = split_index(rest)?;
        let (i, j) = (b / n, b % n);
        let upsampler = rest.strip_prefix("conv").filter(|t| t.is_empty() || t.starts_with('.'));
        return match (sub, upsampler) {
            (0, _) => Some(format!("up_blocks.{i}.resnets.{j}.{}", sgm_resnet_part(rest)?)),
            (1 | 2, Some(tail)) if j == layers_per_block => Some(format!("up_blocks.{i}.upsamplers.0.conv{tail}")),
            (1, None) => Some(format!("up_blocks.{i}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    None
}

/// A dotted UNet path in either layout, as a diffusers path.
fn unet_module(path: &str) -> Option<String> {
    let root = path.split('.').next().unwrap_or(path);
    if SGM_ROOTS.contains(&root) {
        sgm_unet_module_to_diffusers(path, SDXL_LAYERS_PER_BLOCK)
    } else {
        Some(path.to_string())
    }
}

/// A dotted text-encoder path with the `text_model.` prefix SDXL's files use.
fn clip_module(path: &str) -> String {
    let needs_prefix = ["encoder.", "embeddings.", "final_layer_norm"].iter().any(|p| path.starts_with(p));
    if needs_prefix {
        format!("text_model.{path}")
    } else {
        path.to_string()
    }
}

/// Old diffusers attention-processor names (`to_q_lora`, with `_lora` already cut off) as the
/// model's module names.
fn legacy_attention(component: LoraComponent, path: &str) -> String {
    let (head, last) = path.rsplit_once('.').unwrap_or(("", path));
    let renamed = match (component, last) {
        (LoraComponent::Unet, "to_out") => "to_out.0",
        (LoraComponent::Unet, other) => other,
        (_, "to_q") => "q_proj",
        (_, "to_k") => "k_proj",
        (_, "to_v") => "v_proj",
        (_, "to_out") => "out_proj",
        (_, other) => other,
    };
    if head.is_empty() {
        renamed.to_string()
    } else {
        format!("{head}.{renamed}")
    }
}

/// Parses one tensor key of a LoRA file (any of the formats in the module docs). `None` for keys
/// that are not LoRA weights of the SDXL UNet or text encoders.
pub fn parse_key(key: &str) -> Option<LoraKey> {
    let (suffix, part, format, legacy) = SUFFIXES.iter().copied().find(|(s, ..)| key.ends_with(s))?;
    let stem = &key[..key.len() - suffix.len()];
    if let Some((prefix, component)) = KOHYA_PREFIXES.iter().copied().find(|(p, _)| stem.starts_with(p)) {
        let rest = &stem[prefix.len()..];
        let module = match component {
            LoraComponent::Unet => unet_module(&underscores_to_path(rest, &UNET_WORDS))?,
            _ => clip_module(&underscores_to_path(rest, &CLIP_WORDS)),
        };
        return Some(LoraKey { component, module, part, format: LoraFormat::Kohya });
    }
    let (component, path) = if let Some(p) = stem.strip_prefix("unet.") {
        (LoraComponent::Unet, p)
    } else if let Some(p) = stem.strip_prefix("text_encoder_2.") {
        (LoraComponent::TextEncoder2, p)
    } else if let Some(p) = stem.strip_prefix("text_encoder.") {
        (LoraComponent::TextEncoder, p)
    } else if let Some(p) =
        stem.strip_prefix("model.diffusion_model.").or_else(|| stem.strip_prefix("diffusion_model."))
    {
        (LoraComponent::Unet, p)
    } else if DIFFUSERS_UNET_ROOTS.iter().any(|r| stem.starts_with(&format!("{r}."))) {
        (LoraComponent::Unet, stem)
    } else {
        return None;
    };
    if path.is_empty() {
        return None;
    }
    // Attention processors used to own the LoRA layers: `attn1.processor.to_q_lora.down.weight`.
    let path = path.replace(".processor.", ".");
    let path = if legacy { legacy_attention(component, &path) } else { path };
    let module = match component {
        LoraComponent::Unet => unet_module(&path)?,
        _ => clip_module(&path),
    };
    Some(LoraKey { component, module, part, format })
}

// ---------------------------------------------------------------------------------------------
// merging
// ---------------------------------------------------------------------------------------------

/// `a` and `b` have the same elements once size-1 dims are dropped (`[C, C, 1, 1]` vs `[C, C]`).
fn same_but_unit_dims(a: &[usize], b: &[usize]) -> bool {
    let strip = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    strip(a) == strip(b)
}

/// The shape the model sees for `name` (after the store's chunk and transpose), from the header.
fn model_shape(store: &TensorStore, name: &str) -> Option<Vec<usize>> {
    let src = store.source(name)?;
    let mut shape = store.shape(&src.name)?.to_vec();
    if let Some(c) = src.chunk {
        let rows = shape.first_mut()?;
        if c.count == 0 || *rows % c.count != 0 {
            return None;
        }
        *rows /= c.count;
    }
    if src.transpose && shape.len() == 2 {
        shape.swap(0, 1);
    }
    Some(shape)
}

/// One LoRA's contribution to one weight.
#[derive(Debug, Clone)]
struct Contribution {
    module: LoraModule,
    weight: f64,
    lora: String,
}

/// A [`TensorStore`] whose weights come out as `W + Σ weight · ΔW` for the modules of the given
/// LoRAs (everything else unchanged). Build the model from [`Self::into_var_builder`].
pub struct LoraMergedStore {
    base: TensorStore,
    component: LoraComponent,
    deltas: HashMap<String, Vec<Contribution>>,
    warnings: Vec<String>,
}

impl LoraMergedStore {
    /// Applies `loras` (each with its user weight; 1.0 is the LoRA as trained, negative weights
    /// subtract) to `component`, loaded from `base` (any store the model loads from: a diffusers
    /// component folder, or a single file with its tensor map).
    ///
    /// Fails when a LoRA has modules for this component but none of them exist in the model, or
    /// when a module's shape differs from the model's (a LoRA for another base model). Modules the
    /// model lacks while others match are skipped and listed in [`Self::warnings`].
    pub fn new(
        base: TensorStore,
        component: LoraComponent,
        loras: &[(&StyleLora, f64)],
    ) -> Result<LoraMergedStore, LoraError> {
        let mut deltas: HashMap<String, Vec<Contribution>> = HashMap::new();
        let mut warnings = Vec::new();
        for (lora, weight) in loras {
            let label = lora.path().display().to_string();
            let wrong = |detail: String| LoraError::WrongModel { path: label.clone(), component, detail };
            let mut missing = Vec::new();
            let mut found = 0usize;
            for (module, m) in lora.modules(component) {
                let tensor = format!("{module}.weight");
                if !base.contains_tensor(&tensor) {
                    missing.push(module.to_string());
                    continue;
                }
                let want = m.delta_shape();
                if let Some(have) = model_shape(&base, &tensor) {
                    if have != want && !same_but_unit_dims(&have, &want) {
                        return Err(wrong(format!(
                            "module {module} ({}) changes a weight of shape {want:?}, the model's {tensor} is {have:?}",
                            m.key
                        )));
                    }
                }
                found += 1;
                if *weight != 0.0 {
                    deltas.entry(tensor).or_default().push(Contribution {
                        module: m.clone(),
                        weight: *weight,
                        lora: label.clone(),
                    });
                }
            }
            if found == 0 && !missing.is_empty() {
                let examples = missing.iter().take(EXAMPLES).cloned().collect::<Vec<_>>().join(", ");
                return Err(wrong(format!(
                    "none of its {} {} modules exist in the model (e.g. {examples})",
                    missing.len(),
                    component.name()
                )));
            }
            warnings.extend(
                missing
                    .into_iter()
                    .map(|m| format!("{label}: {} module {m} is not in the model; skipped", component.name())),
            );
        }
        Ok(LoraMergedStore { base, component, deltas, warnings })
    }

    /// Modules skipped because the model has no such weight, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn component(&self) -> LoraComponent {
        self.component
    }

    /// Names (as the model asks for them) of the weights that get a delta.
    pub fn changed_weights(&self) -> impl Iterator<Item = &str> {
        self.deltas.keys().map(String::as_str)
    }

    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    /// `w` (f32) plus the deltas of `name`.
    fn merge(&self, name: &str, w: Tensor, list: &[Contribution], dev: &Device) -> candle_core::Result<Tensor> {
        let mut acc = w;
        for c in list {
            let d = c.module.delta(dev)?;
            let d = if d.dims() == acc.dims() {
                d
            } else if same_but_unit_dims(d.dims(), acc.dims()) {
                d.reshape(acc.shape())?
            } else {
                return Err(candle_core::Error::Msg(format!(
                    "{}: LoRA module {} changes a weight of shape {:?}, the model's {name} is {:?}",
                    c.lora,
                    c.module.key,
                    d.dims(),
                    acc.dims()
                )));
            };
            acc = (acc + d.affine(c.weight, 0.0)?)?;
        }
        Ok(acc)
    }
}

impl SimpleBackend for LoraMergedStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.deltas.get(name) {
            None => self.base.get(s, name, init, dtype, dev),
            Some(list) => {
                let w = self.base.get(s, name, init, DType::F32, dev)?;
                self.merge(name, w, list, dev)?.to_dtype(dtype)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.deltas.get(name) {
            None => self.base.get_unchecked(name, dtype, dev),
            Some(list) => {
                let w = self.base.get_unchecked(name, DType::F32, dev)?;
                self.merge(name, w, list, dev)?.to_dtype(dtype)
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.base.contains_tensor(name)
    }
}

/// [`LoraMergedStore::new`] under the name the loaders read best at the call site.
pub fn apply_style_loras(
    base: TensorStore,
    component: LoraComponent,
    loras: &[(&StyleLora, f64)],
) -> Result<LoraMergedStore, LoraError> {
    LoraMergedStore::new(base, component, loras)
}
