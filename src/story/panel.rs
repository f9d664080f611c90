//! A panel of the story: what to generate (prompt, cast, poses, seed, settings), what was
//! generated (variants with their full parameters) and what to print (caption, dialogue).

use serde::{Deserialize, Serialize};

use super::assets::AssetPath;
use super::character::CharacterId;
use crate::pose::Skeleton;

/// StoryMaker conditions on at most two characters (reference spec §4: 40 or 60 tokens).
pub const MAX_CAST: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PanelId(pub u64);

/// One character in the panel, with an optional pose for the ControlNet and the adapter modes
/// the paper shows (spec §5.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CastSlot {
    pub character: CharacterId,
    #[serde(default)]
    pub pose: Option<Skeleton>,
    /// "ID only": keep the face, let the prompt decide clothes and hair (character embedding zeroed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub id_only: bool,
    /// Clothing swap: this image (in the project's assets) replaces the character's masked crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloth: Option<AssetPath>,
    /// Character interpolation: blend this character with another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<CharacterBlend>,
}

impl CastSlot {
    pub fn new(character: CharacterId) -> CastSlot {
        CastSlot { character, pose: None, id_only: false, cloth: None, blend: None }
    }
}

/// `(1 - weight) · this character + weight · with`, computed at this slot's position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CharacterBlend {
    pub with: CharacterId,
    /// 0 = only this character, 1 = only `with`.
    pub weight: f32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "value")]
pub enum SeedChoice {
    /// A fresh seed for every generation (the seed used is recorded on the variant).
    Random,
    /// Locked: regenerating reproduces the same image.
    Fixed(u64),
}

/// Generation settings. Defaults follow the reference pipeline (spec §7: 1024², 25 steps,
/// guidance 7.5, ip_scale 0.8, lora_scale 0.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance: f32,
    pub ip_scale: f32,
    pub lora_scale: f32,
    /// Pose ControlNet strength (diffusers' `controlnet_conditioning_scale`; xinsir recommends 1.0).
    #[serde(default = "one")]
    pub pose_scale: f32,
    /// Fraction of the steps the pose guides (`control_guidance_end`; the start is 0).
    #[serde(default = "one")]
    pub pose_end: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            width: 1024,
            height: 1024,
            steps: 25,
            guidance: 7.5,
            ip_scale: 0.8,
            lora_scale: 0.8,
            pose_scale: 1.0,
            pose_end: 1.0,
        }
    }
}

impl GenParams {
    /// SDXL works in multiples of 8 px (latent /8); keep sizes sane.
    pub fn sanitized(mut self) -> GenParams {
        let snap = |v: u32| (v.clamp(256, 2048) / 8) * 8;
        self.width = snap(self.width);
        self.height = snap(self.height);
        self.steps = self.steps.clamp(1, 200);
        self.guidance = self.guidance.clamp(0.0, 30.0);
        self.ip_scale = self.ip_scale.clamp(0.0, 2.0);
        self.lora_scale = self.lora_scale.clamp(0.0, 2.0);
        self.pose_scale = if self.pose_scale.is_finite() { self.pose_scale.clamp(0.0, 2.0) } else { 1.0 };
        self.pose_end = if self.pose_end.is_finite() { self.pose_end.clamp(0.05, 1.0) } else { 1.0 };
        self
    }
}

/// A generated image kept with everything needed to reproduce it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub image: AssetPath,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub params: GenParams,
    pub cast: Vec<CastSlot>,
    /// Model identifiers (e.g. SDXL checkpoint file name and hash) used for this image.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub scheduler: String,
    /// ArcFace similarity of the image's faces with the cast (mean of each character's best match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    pub id: PanelId,
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default)]
    pub cast: Vec<CastSlot>,
    pub seed: SeedChoice,
    pub params: GenParams,
    #[serde(default)]
    pub caption: String,
    #[serde(default)]
    pub dialogue: String,
    #[serde(default)]
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub chosen: Option<usize>,
    /// Style LoRAs for this panel only; `None` uses the story's (`ProjectSettings::style_loras`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style_loras: Option<Vec<StyleLoraRef>>,
    /// Where the dialogue's speech bubble goes on export; `None` places it automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bubble: Option<BubblePlacement>,
}

/// A speech bubble's place on its panel, in fractions of the panel frame (0,0 top left, 1,1
/// bottom right), so it stays put whatever the page layout. The exporter keeps the bubble inside
/// the frame whatever the values (a project from elsewhere may hold anything).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BubblePlacement {
    /// Centre of the bubble.
    pub center: [f32; 2],
    /// Tip of the tail (towards the speaker); a tip inside the bubble draws no tail.
    pub tail: [f32; 2],
    /// Widest the bubble may grow, as a fraction of the frame width.
    pub width: f32,
}

impl Default for BubblePlacement {
    fn default() -> Self {
        BubblePlacement { center: [0.36, 0.2], tail: [0.46, 0.55], width: 0.62 }
    }
}

/// An SDXL style LoRA from the models folder's `loras/` applied on top of the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StyleLoraRef {
    /// File name inside `<models>/loras/` (a plain name, so projects move between machines).
    pub file: String,
    /// 1.0 = as trained; negative values subtract the style.
    pub weight: f32,
}

impl StyleLoraRef {
    /// A plain file name (no folders) and a finite weight in [-4, 4].
    pub fn is_valid(&self) -> bool {
        !self.file.is_empty()
            && !self.file.contains(['/', '\\', ':'])
            && self.file != ".."
            && self.file != "."
            && self.weight.is_finite()
            && self.weight.abs() <= 4.0
    }
}

impl Panel {
    pub fn new(id: PanelId, params: GenParams, negative_prompt: String) -> Panel {
        Panel {
            id,
            prompt: String::new(),
            negative_prompt,
            cast: Vec::new(),
            seed: SeedChoice::Random,
            params,
            caption: String::new(),
            dialogue: String::new(),
            variants: Vec::new(),
            chosen: None,
            style_loras: None,
            bubble: None,
        }
    }

    pub fn chosen_variant(&self) -> Option<&Variant> {
        self.chosen.and_then(|i| self.variants.get(i))
    }
}
