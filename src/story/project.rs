//! The project: cast, panels in timeline order, and per-project settings.

use serde::{Deserialize, Serialize};

use super::character::{Character, CharacterId};
use super::panel::{GenParams, Panel, PanelId};

/// Version of `project.json`. Bump it with a migration step in [`super::migrate`].
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectSettings {
    /// Defaults for new panels.
    pub default_params: GenParams,
    #[serde(default)]
    pub default_negative_prompt: String,
    /// Style LoRAs applied to every panel that has no list of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub style_loras: Vec<super::panel::StyleLoraRef>,
    /// How skeletons are drawn for the pose ControlNet (thick: what xinsir's SDXL model expects).
    #[serde(default = "thick")]
    pub pose_style: crate::pose::render::PoseStyle,
}

fn thick() -> crate::pose::render::PoseStyle {
    crate::pose::render::PoseStyle::Thick
}

impl Default for ProjectSettings {
    fn default() -> Self {
        ProjectSettings {
            default_params: GenParams::default(),
            // The reference demo's negative prompt (spec §7).
            default_negative_prompt: "bad quality, NSFW, low quality, ugly, disfigured, deformed".into(),
            style_loras: Vec::new(),
            pose_style: thick(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub format_version: u32,
    pub title: String,
    pub characters: Vec<Character>,
    /// Timeline order.
    pub panels: Vec<Panel>,
    pub settings: ProjectSettings,
    /// Next free id for characters and panels.
    pub next_id: u64,
}

impl Default for Project {
    fn default() -> Self {
        Project::new("Untitled story")
    }
}

impl Project {
    pub fn new(title: &str) -> Project {
        Project {
            format_version: FORMAT_VERSION,
            title: title.to_string(),
            characters: Vec::new(),
            panels: Vec::new(),
            settings: ProjectSettings::default(),
            next_id: 1,
        }
    }

    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn character(&self, id: CharacterId) -> Option<&Character> {
        self.characters.iter().find(|c| c.id == id)
    }

    pub fn character_index(&self, id: CharacterId) -> Option<usize> {
        self.characters.iter().position(|c| c.id == id)
    }

    pub fn panel(&self, id: PanelId) -> Option<&Panel> {
        self.panels.iter().find(|p| p.id == id)
    }

    pub fn panel_index(&self, id: PanelId) -> Option<usize> {
        self.panels.iter().position(|p| p.id == id)
    }

    /// A new panel with the project's defaults and a fresh id (not yet inserted).
    pub fn make_panel(&mut self) -> Panel {
        let id = PanelId(self.alloc_id());
        self.panel_with_id(id)
    }

    /// A new panel with the project's defaults and the given id.
    pub fn panel_with_id(&self, id: PanelId) -> Panel {
        Panel::new(id, self.settings.default_params.clone(), self.settings.default_negative_prompt.clone())
    }
}
